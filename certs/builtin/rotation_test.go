package builtin

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
)

// TestRootStoreRotation walks a rotation through the Secrets: every step
// is what a replica reads back, a start or an end cut short is resumed,
// and the end leaves the new root alone in weft-ca-root.
func TestRootStoreRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := createNamespace(t, ctx)
	leader := &RootStore{Client: env.Client, Namespace: ns, TrustDomain: "cluster.local"}
	replica := &RootStore{Client: env.Client, Namespace: ns}
	old, err := leader.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := replica.LoadTrust(ctx)
	if err != nil || st.Rotation.Phase != certs.PhaseStable || !st.Current.Cert.Equal(old.Cert) || st.Generation != 0 || st.Next != nil {
		t.Fatalf("first state %+v, %v", st.Rotation, err)
	}
	bundle := func() []*corev1.Secret {
		t.Helper()
		var root corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: DefaultSecretName}, &root); err != nil {
			t.Fatal(err)
		}
		return []*corev1.Secret{&root}
	}
	caRoots := func() []string {
		roots, err := certs.ParseCertificatesPEM(bundle()[0].Data["ca.crt"])
		if err != nil {
			t.Fatal(err)
		}
		var fps []string
		for _, r := range roots {
			fps = append(fps, certs.Fingerprint(r)[:8])
		}
		return fps
	}
	fp := func(kp *KeyPair) string { return certs.Fingerprint(kp.Cert)[:8] }

	// Start: the incoming root's Secret and phase AddNewRoot; ca.crt (what
	// workloads are given for the control plane) holds both roots.
	st, err = leader.StartRotation(ctx, st, 1)
	if err != nil {
		t.Fatal(err)
	}
	next := st.Next
	seen, err := replica.LoadTrust(ctx)
	if err != nil || seen.Key() != st.Key() || seen.Rotation.Phase != certs.PhaseAddNewRoot || seen.NextGeneration != 1 {
		t.Fatalf("replica reads %+v (%v), want the leader's AddNewRoot", seen.Rotation, err)
	}
	if got := strings.Join(caRoots(), ","); got != fp(old)+","+fp(next) {
		t.Fatalf("ca.crt holds %s, want old,new", got)
	}
	if seen.Signing() != seen.Current {
		t.Fatal("AddNewRoot signs with the new root")
	}
	if _, err := leader.StartRotation(ctx, seen, 2); err == nil {
		t.Fatal("a second rotation started during the first")
	}

	// A step written from a stale read is refused (resourceVersion), so two
	// leaders cannot both move the phase.
	if _, err := leader.SetPhase(ctx, st, certs.Rotation{Phase: certs.PhaseSwitchSigning, Current: old.Cert, Next: next.Cert}); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.SetPhase(ctx, st, certs.Rotation{Phase: certs.PhaseSwitchSigning, Current: old.Cert, Next: next.Cert}); !apierrors.IsConflict(errors.Unwrap(err)) {
		t.Fatalf("a step from a stale read: %v, want a conflict", err)
	}
	st, _ = replica.LoadTrust(ctx)
	if st.Rotation.Phase != certs.PhaseSwitchSigning || st.Signing() != st.Next {
		t.Fatalf("after the switch: phase %s, signing the new root %v", st.Rotation.Phase, st.Signing() == st.Next)
	}
	st, err = leader.SetPhase(ctx, st, certs.Rotation{Phase: certs.PhaseRetireOldRoot, Current: old.Cert, Next: next.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(caRoots(), ","); got != fp(next) {
		t.Fatalf("RetireOldRoot: ca.crt holds %s, want only the new root", got)
	}

	// A reader that sees the phase but not the incoming Secret (a step
	// half seen) is told to read again.
	half, err := replica.trustState(bundle()[0], nil)
	if !errors.Is(err, ErrInconsistent) {
		t.Fatalf("phase without the incoming Secret: %+v, %v; want ErrInconsistent", half.Rotation, err)
	}

	// The end: weft-ca-root holds the new root with its generation, and
	// the incoming Secret is gone.
	end, _ := st.Rotation.Advance(certs.Acks{TrustNext: true, ServeFromNext: true, DroppedCurrent: true})
	st, err = leader.SetPhase(ctx, st, end)
	if err != nil {
		t.Fatal(err)
	}
	final, err := replica.LoadTrust(ctx)
	if err != nil || final.Rotation.Phase != certs.PhaseStable || !final.Current.Cert.Equal(next.Cert) || final.Generation != 1 || final.Next != nil {
		t.Fatalf("after the end: %+v gen %d next %v (%v)", final.Rotation, final.Generation, final.Next, err)
	}
	if !final.Current.Signer().Public().(*ecdsa.PublicKey).Equal(next.Signer().Public()) {
		t.Fatal("the root Secret holds the new certificate without its key")
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: DefaultSecretName + NextSuffix}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the incoming root's Secret is still there: %v", err)
	}
	if got := strings.Join(caRoots(), ","); got != fp(next) {
		t.Fatalf("ca.crt holds %s, want the new root", got)
	}

	// An end cut short between its two writes leaves the incoming Secret
	// holding the current root: a leftover the leader deletes.
	sec, _ := leader.encode(next)
	sec.Name = DefaultSecretName + NextSuffix
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	left, err := replica.LoadTrust(ctx)
	if err != nil || !left.Leftover || left.Rotation.Phase != certs.PhaseStable {
		t.Fatalf("leftover: %+v leftover=%v (%v)", left.Rotation, left.Leftover, err)
	}
	if _, err := leader.DeleteLeftover(ctx, left); err != nil {
		t.Fatal(err)
	}

	// A start cut short (incoming Secret created, phase not written) is
	// resumed with the same incoming root.
	pre, _ := NewRoot("cluster.local", time.Now(), time.Hour)
	sec, _ = leader.encode(pre)
	sec.Name = DefaultSecretName + NextSuffix
	sec.Annotations[GenerationAnnotation] = "2"
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	left, _ = replica.LoadTrust(ctx)
	resumed, err := leader.StartRotation(ctx, left, 2)
	if err != nil || !resumed.Next.Cert.Equal(pre.Cert) || resumed.Rotation.Phase != certs.PhaseAddNewRoot {
		t.Fatalf("resumed start: %+v (%v), want AddNewRoot to the root already created", resumed.Rotation, err)
	}

	// A phase annotation someone mistyped is an error naming it.
	bad := bundle()[0]
	bad.Annotations[PhaseAnnotation] = "Sideways"
	if _, err := replica.trustState(bad, nil); err == nil || !strings.Contains(err.Error(), PhaseAnnotation) || !strings.Contains(err.Error(), "Sideways") {
		t.Fatalf("bad phase: %v", err)
	}
}
