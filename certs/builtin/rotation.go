package builtin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
)

// A root rotation is persisted in the root Secrets, so that every replica
// follows it and a new leader resumes it:
//
//   - weft-ca-root keeps the current root (tls.crt, tls.key) until the
//     rotation ends. Its annotations carry the phase, since when, and the
//     incoming root's fingerprint; its ca.crt is the phase's trust bundle
//     (internal/controller/trust publishes it to workloads).
//   - weft-ca-root-next holds the incoming root, in the same format, from
//     the start of a rotation until its end.
//
// Each step is one write of weft-ca-root (the phase and the bundle change
// together). The last step copies the incoming root into weft-ca-root and
// then deletes weft-ca-root-next: the old root's key is gone, and a replica
// that reads the Secrets in between sees a consistent state (both hold the
// new root).
const (
	// NextSuffix makes the incoming root's Secret name from the root's.
	NextSuffix = "-next"
	// PhaseAnnotation (on the root Secret) is the rotation phase; absent
	// means Stable.
	PhaseAnnotation = "weft.dev/root-rotation-phase"
	// PhaseSinceAnnotation is when the phase began (RFC 3339).
	PhaseSinceAnnotation = "weft.dev/root-rotation-phase-since"
	// NextRootAnnotation is the SHA-256 fingerprint of the incoming root,
	// so a reader can tell that the two Secrets belong together.
	NextRootAnnotation = "weft.dev/next-root-sha256"
	// GenerationAnnotation is the root's generation: the MeshConfig
	// spec.certificates.builtIn.rootGeneration its rotation answered.
	GenerationAnnotation = "weft.dev/root-generation"
)

// ErrInconsistent is returned by LoadTrust when the two Secrets were read
// in the middle of a step (a rotation starting or ending): read again.
var ErrInconsistent = errors.New("the root CA Secrets are being changed by a rotation step; read again")

// TrustState is the built-in CA's persisted trust: which roots are trusted
// and which one signs (Rotation), with their keys.
type TrustState struct {
	Rotation certs.Rotation
	// Current is the root in weft-ca-root; Next the one in
	// weft-ca-root-next during a rotation.
	Current, Next *KeyPair
	// Generation is the current root's; NextGeneration the incoming one's.
	Generation, NextGeneration int64
	// PhaseSince is when the phase began (zero when unknown).
	PhaseSince time.Time
	// Leftover: weft-ca-root-next exists while Stable, from a start that
	// was cut short (its root differs from the current one; the leader
	// resumes the start) or an end that was (it equals the current root;
	// the leader deletes it). Next and NextGeneration describe it.
	Leftover bool

	root *corev1.Secret // as read, for updates
}

// Signing is the key pair whose certificate is Rotation.Signing().
func (s TrustState) Signing() *KeyPair {
	if s.Next != nil && !s.Leftover && s.Rotation.Signing() == s.Next.Cert {
		return s.Next
	}
	return s.Current
}

// Key identifies the state: the phase and the roots' fingerprints. Two
// replicas that applied the same Key serve the same bundle and sign from
// the same root.
func (s TrustState) Key() string {
	k := string(s.Rotation.Phase) + "/" + certs.Fingerprint(s.Current.Cert)
	if s.Rotation.Next != nil {
		k += "/" + certs.Fingerprint(s.Rotation.Next)
	}
	return k
}

func (s *RootStore) nextKey() client.ObjectKey {
	k := s.key()
	k.Name += NextSuffix
	return k
}

// LoadTrust reads the trust state: the root Secret, and the incoming root's
// Secret when there is one. ErrRootNotFound while the leader has not
// created the root; ErrInconsistent (retry) when a step was half seen.
func (s *RootStore) LoadTrust(ctx context.Context) (TrustState, error) {
	var root, next corev1.Secret
	if err := s.Client.Get(ctx, s.key(), &root); err != nil {
		if apierrors.IsNotFound(err) {
			return TrustState{}, fmt.Errorf("%w: Secret %s", ErrRootNotFound, s.key())
		}
		return TrustState{}, fmt.Errorf("reading the root CA Secret %s: %w", s.key(), err)
	}
	nextPtr := &next
	if err := s.Client.Get(ctx, s.nextKey(), &next); err != nil {
		if !apierrors.IsNotFound(err) {
			return TrustState{}, fmt.Errorf("reading the incoming root CA Secret %s: %w", s.nextKey(), err)
		}
		nextPtr = nil
	}
	return s.trustState(&root, nextPtr)
}

// trustState decodes the Secrets (next may be nil). Pure but for the clock.
func (s *RootStore) trustState(root, next *corev1.Secret) (TrustState, error) {
	cur, err := s.decode(root)
	if err != nil {
		return TrustState{}, err
	}
	st := TrustState{Current: cur, root: root, Rotation: certs.NewRotation(cur.Cert)}
	if st.Generation, err = generation(root, s.key()); err != nil {
		return TrustState{}, err
	}
	if t, err := time.Parse(time.RFC3339, root.Annotations[PhaseSinceAnnotation]); err == nil {
		st.PhaseSince = t
	}
	if next != nil {
		nk := s.nextKey()
		if st.Next, err = (&RootStore{Namespace: nk.Namespace, Name: nk.Name, Clock: s.Clock}).decode(next); err != nil {
			return TrustState{}, err
		}
		if st.NextGeneration, err = generation(next, nk); err != nil {
			return TrustState{}, err
		}
	}
	phase := certs.RotationPhase(root.Annotations[PhaseAnnotation])
	switch phase {
	case "", certs.PhaseStable:
		st.Leftover = st.Next != nil
		return st, nil
	case certs.PhaseAddNewRoot, certs.PhaseSwitchSigning, certs.PhaseRetireOldRoot:
	default:
		return TrustState{}, fmt.Errorf("root CA Secret %s: annotation %s is %q, not a rotation phase (%s, %s, %s)",
			s.key(), PhaseAnnotation, phase, certs.PhaseAddNewRoot, certs.PhaseSwitchSigning, certs.PhaseRetireOldRoot)
	}
	if st.Next == nil || certs.Fingerprint(st.Next.Cert) != root.Annotations[NextRootAnnotation] {
		return TrustState{}, ErrInconsistent
	}
	if st.Next.Cert.Equal(cur.Cert) {
		// The end of a rotation, seen between its two writes... which
		// cannot happen (the first write clears the phase); refuse rather
		// than trust a root twice.
		return TrustState{}, ErrInconsistent
	}
	st.Rotation = certs.Rotation{Phase: phase, Current: cur.Cert, Next: st.Next.Cert}
	return st, nil
}

func generation(sec *corev1.Secret, k client.ObjectKey) (int64, error) {
	v, ok := sec.Annotations[GenerationAnnotation]
	if !ok {
		return 0, nil
	}
	g, err := strconv.ParseInt(v, 10, 64)
	if err != nil || g < 0 {
		return 0, fmt.Errorf("root CA Secret %s: annotation %s is %q, not a non-negative integer", k, GenerationAnnotation, v)
	}
	return g, nil
}

// StartRotation begins rotating to a new root of generation gen: it
// creates the incoming root's Secret (or reuses the one a cut-short start
// left for gen) and moves the root Secret to AddNewRoot. Leader only.
func (s *RootStore) StartRotation(ctx context.Context, st TrustState, gen int64) (TrustState, error) {
	if st.Rotation.Phase != certs.PhaseStable {
		return st, fmt.Errorf("a root rotation is already in progress (phase %s)", st.Rotation.Phase)
	}
	next := st.Next
	if st.Leftover && (next.Cert.Equal(st.Current.Cert) || st.NextGeneration != gen) {
		if err := s.deleteNext(ctx); err != nil {
			return st, err
		}
		next = nil
	}
	if next == nil {
		lifetime := s.Lifetime
		if lifetime == 0 {
			lifetime = DefaultRootLifetime
		}
		kp, err := NewRoot(s.TrustDomain, s.now(), lifetime)
		if err != nil {
			return st, err
		}
		sec, err := s.encode(kp)
		if err != nil {
			return st, err
		}
		sec.Name = s.nextKey().Name
		sec.Annotations[GenerationAnnotation] = strconv.FormatInt(gen, 10)
		if err := s.Client.Create(ctx, sec); err != nil {
			// AlreadyExists: a previous leader's start; the next read
			// finds it as a leftover and resumes.
			return st, fmt.Errorf("creating the incoming root CA Secret %s: %w", s.nextKey(), err)
		}
		next = kp
	}
	rot, err := st.Rotation.Start(next.Cert)
	if err != nil {
		return st, err
	}
	st.Next, st.NextGeneration, st.Leftover = next, gen, false
	return s.persist(ctx, st, rot)
}

// SetPhase persists the next state of a rotation (from Rotation.Advance or
// Abort). Stable after RetireOldRoot ends the rotation: the incoming root
// replaces the current one in the root Secret, and its own Secret is
// deleted. Stable after AddNewRoot (an abort) deletes the incoming root.
// Leader only.
func (s *RootStore) SetPhase(ctx context.Context, st TrustState, next certs.Rotation) (TrustState, error) {
	if next.Phase == st.Rotation.Phase {
		return st, nil
	}
	st, err := s.persist(ctx, st, next)
	if err != nil {
		return st, err
	}
	if next.Phase == certs.PhaseStable {
		if err := s.deleteNext(ctx); err != nil {
			return st, err
		}
		st.Next, st.NextGeneration, st.Leftover = nil, 0, false
	}
	return st, nil
}

// DeleteLeftover removes an incoming root's Secret that no rotation refers
// to and that is the current root (an end cut short).
func (s *RootStore) DeleteLeftover(ctx context.Context, st TrustState) (TrustState, error) {
	if !st.Leftover {
		return st, nil
	}
	if err := s.deleteNext(ctx); err != nil {
		return st, err
	}
	st.Next, st.NextGeneration, st.Leftover = nil, 0, false
	return st, nil
}

// persist writes rot into the root Secret (one update, guarded by the
// resourceVersion read): phase, since, incoming fingerprint and ca.crt;
// when rot ends a rotation, the incoming root's certificate and key too.
func (s *RootStore) persist(ctx context.Context, st TrustState, rot certs.Rotation) (TrustState, error) {
	sec := st.root.DeepCopy()
	sec.Annotations = maps.Clone(sec.Annotations)
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	now := s.now().UTC().Truncate(time.Second)
	cur := st.Current
	if rot.Phase == certs.PhaseStable {
		delete(sec.Annotations, PhaseAnnotation)
		delete(sec.Annotations, NextRootAnnotation)
		if st.Next != nil && rot.Current.Equal(st.Next.Cert) {
			// The end: the incoming root becomes the root.
			fresh, err := s.encode(st.Next)
			if err != nil {
				return st, err
			}
			sec.Data = fresh.Data
			sec.Annotations[GenerationAnnotation] = strconv.FormatInt(st.NextGeneration, 10)
			cur = st.Next
		}
	} else {
		sec.Annotations[PhaseAnnotation] = string(rot.Phase)
		sec.Annotations[NextRootAnnotation] = certs.Fingerprint(rot.Next)
	}
	sec.Annotations[PhaseSinceAnnotation] = now.Format(time.RFC3339)
	sec.Data = maps.Clone(sec.Data)
	sec.Data["ca.crt"] = rot.Bundle().PEM()
	if err := s.Client.Update(ctx, sec); err != nil {
		return st, fmt.Errorf("writing root rotation phase %s to Secret %s: %w", rot.Phase, s.key(), err)
	}
	out := st
	out.root, out.Rotation, out.Current, out.PhaseSince = sec, rot, cur, now
	if cur != st.Current {
		out.Generation = st.NextGeneration
	}
	return out, nil
}

func (s *RootStore) deleteNext(ctx context.Context) error {
	k := s.nextKey()
	sec := &corev1.Secret{}
	sec.Namespace, sec.Name = k.Namespace, k.Name
	if err := s.Client.Delete(ctx, sec); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the incoming root CA Secret %s: %w", k, err)
	}
	return nil
}

// Roots is the state's trusted roots' certificates, for status and
// metrics.
func (s TrustState) Roots() []*x509.Certificate { return s.Rotation.Bundle().Roots() }

// NamespacedName of the root Secret and of the incoming root's Secret.
func (s *RootStore) SecretNames() (root, next types.NamespacedName) {
	return s.key(), s.nextKey()
}
