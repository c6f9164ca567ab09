// Package rootrotation asks weft-controller for a root rotation of the
// built-in CA and waits for it, through MeshConfig: the client side of
// docs/design/020's rotation driver. `weft ca rotate-root` uses it, and so
// can tests (Rotate starts a rotation and returns when it is over).
package rootrotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
)

// Progress is what Wait reports whenever the rotation's status changes.
type Progress struct {
	Status    v1alpha1.RootRotationStatus
	Condition *metav1.Condition // RootRotation, if written yet
}

// Request asks for a rotation: it raises MeshConfig weft's
// spec.certificates.builtIn.rootGeneration to one more than the root in
// effect (status.rootRotation.rootGeneration) and than its own value, and
// creates the MeshConfig when there is none. A rotation already asked for
// and not finished is not asked for again: Request returns its
// generation, so calling it twice rotates once. namespace holds the root
// Secret (read, when there is no MeshConfig, for the root's generation;
// "" is weft-system).
func Request(ctx context.Context, c client.Client, namespace string) (int64, error) {
	for attempt := 0; ; attempt++ {
		gen, err := request(ctx, c, namespace)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			if attempt < 5 {
				continue // someone else wrote MeshConfig meanwhile: read again
			}
		}
		return gen, err
	}
}

func request(ctx context.Context, c client.Client, namespace string) (int64, error) {
	var mc v1alpha1.MeshConfig
	err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc)
	if apierrors.IsNotFound(err) {
		gen := rootGeneration(ctx, c, namespace) + 1
		mc = v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName}}
		mc.Spec.Certificates.BuiltIn = &v1alpha1.BuiltInCAConfig{RootGeneration: gen}
		return gen, c.Create(ctx, &mc)
	}
	if err != nil {
		return 0, fmt.Errorf("reading MeshConfig %s: %w", v1alpha1.MeshConfigName, err)
	}
	if p := mc.Spec.Certificates.Provider; p != "" && p != v1alpha1.CertificateProviderBuiltIn {
		return 0, fmt.Errorf("MeshConfig %s: spec.certificates.provider is %s; root rotation is for the built-in CA (rotate your cert-manager issuer's CA instead, see docs/design/020)", mc.Name, p)
	}
	var spec, current int64
	if b := mc.Spec.Certificates.BuiltIn; b != nil {
		spec = b.RootGeneration
	}
	rr := mc.Status.RootRotation
	if rr != nil {
		current = rr.RootGeneration
	} else {
		current = rootGeneration(ctx, c, namespace)
	}
	if spec > current {
		return spec, nil // asked for already, not finished yet
	}
	gen := max(spec, current) + 1
	next := mc.DeepCopy()
	if next.Spec.Certificates.BuiltIn == nil {
		next.Spec.Certificates.BuiltIn = &v1alpha1.BuiltInCAConfig{}
	}
	next.Spec.Certificates.BuiltIn.RootGeneration = gen
	// Update, not patch: the resourceVersion makes a concurrent request a
	// conflict (retried from a fresh read) instead of a second rotation.
	if err := c.Update(ctx, next); err != nil {
		return 0, err
	}
	return gen, nil
}

// rootGeneration reads the root's generation from its Secret, best effort
// (0 when it cannot be read: the caller may not be allowed to).
func rootGeneration(ctx context.Context, c client.Client, namespace string) int64 {
	if namespace == "" {
		namespace = builtin.DefaultNamespace
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: builtin.DefaultSecretName}, &sec); err != nil {
		return 0
	}
	g, _ := strconv.ParseInt(sec.Annotations[builtin.GenerationAnnotation], 10, 64)
	return g
}

// Wait polls MeshConfig weft until the root of generation gen is the only
// root (status.rootRotation: rootGeneration ≥ gen, phase Stable), calling
// progress (if not nil) whenever the phase or what it waits for changes.
// It returns ctx's error, with the last status, when ctx ends first.
func Wait(ctx context.Context, c client.Client, gen int64, progress func(Progress)) error {
	var last Progress
	var lastErr error
	seen := false
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		var mc v1alpha1.MeshConfig
		err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc)
		if err == nil && mc.Status.RootRotation != nil {
			p := Progress{Status: *mc.Status.RootRotation, Condition: meta.FindStatusCondition(mc.Status.Conditions, v1alpha1.ConditionRootRotation)}
			if !seen || changed(last, p) {
				seen, last = true, p
				if progress != nil {
					progress(p)
				}
			}
			if p.Status.RootGeneration >= gen && p.Status.Phase == string(certs.PhaseStable) {
				return nil
			}
		} else if err != nil && !apierrors.IsNotFound(err) {
			lastErr = err // the API server may be briefly away: keep polling
		}
		select {
		case <-ctx.Done():
			if !seen {
				why := ""
				if lastErr != nil {
					why = fmt.Sprintf("; last error reading it: %v", lastErr)
				}
				return fmt.Errorf("waiting for root generation %d: %w (weft-controller has not written MeshConfig status.rootRotation: is it running?%s)", gen, ctx.Err(), why)
			}
			return fmt.Errorf("waiting for root generation %d: %w; last phase %s (root generation %d): %s", gen, ctx.Err(), last.Status.Phase, last.Status.RootGeneration, Describe(last))
		case <-t.C:
		}
	}
}

func changed(a, b Progress) bool {
	if a.Status.Phase != b.Status.Phase || a.Status.WaitingFor != b.Status.WaitingFor || a.Status.RootGeneration != b.Status.RootGeneration ||
		a.Status.WaitingForProxyCount != b.Status.WaitingForProxyCount || !slices.Equal(a.Status.WaitingForProxies, b.Status.WaitingForProxies) {
		return true
	}
	if (a.Condition == nil) != (b.Condition == nil) {
		return true
	}
	return a.Condition != nil && (a.Condition.Reason != b.Condition.Reason || a.Condition.Message != b.Condition.Message)
}

// Describe is one line about a progress: what the phase waits for, or the
// condition's message; the proxies a phase waits for are named (the first
// 20, status.rootRotation.waitingForProxies) with the deadline after which
// it is forced on.
func Describe(p Progress) string {
	s := p.Status
	switch {
	case s.WaitingFor != "":
		out := s.WaitingFor
		if len(s.WaitingForProxies) > 0 && !strings.Contains(out, s.WaitingForProxies[len(s.WaitingForProxies)-1]) {
			// waitingFor was cut to its 1,024 bytes: name them here.
			out += "; not yet: " + strings.Join(s.WaitingForProxies, ", ")
			if more := int(s.WaitingForProxyCount) - len(s.WaitingForProxies); more > 0 {
				out += fmt.Sprintf(" and %d more", more)
			}
		}
		if s.PhaseDeadline != nil && s.WaitingForProxyCount > 0 && !strings.Contains(out, "forced on") {
			out += "; their streams are closed at " + s.PhaseDeadline.UTC().Format(time.RFC3339) + " and the phase is forced on without them 30s later"
		}
		return out
	case p.Condition != nil:
		return p.Condition.Message
	}
	return ""
}

// Rotate asks for a rotation and waits until it is over: the hook for
// tests ("rotation loses no request") and the CLI's --wait. It returns the
// generation of the new root.
func Rotate(ctx context.Context, c client.Client, namespace string, progress func(Progress)) (int64, error) {
	gen, err := Request(ctx, c, namespace)
	if err != nil {
		return 0, err
	}
	if err := Wait(ctx, c, gen, progress); err != nil {
		return gen, err
	}
	return gen, nil
}

// ErrNoStatus is returned by Get when weft-controller has not described
// the root yet.
var ErrNoStatus = errors.New("MeshConfig weft has no status.rootRotation yet: weft-controller has not described the root (is it running, with the built-in CA?)")

// Get returns the current progress.
func Get(ctx context.Context, c client.Client) (Progress, error) {
	var mc v1alpha1.MeshConfig
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
		if apierrors.IsNotFound(err) {
			return Progress{}, ErrNoStatus
		}
		return Progress{}, err
	}
	if mc.Status.RootRotation == nil {
		return Progress{}, ErrNoStatus
	}
	return Progress{Status: *mc.Status.RootRotation, Condition: meta.FindStatusCondition(mc.Status.Conditions, v1alpha1.ConditionRootRotation)}, nil
}
