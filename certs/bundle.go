package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Bundle is a set of trust anchors, in a stable order (oldest first).
// Proxies validate peers against it. It is immutable.
type Bundle struct{ roots []*x509.Certificate }

// NewBundle builds a bundle of CA certificates, dropping duplicates.
func NewBundle(roots ...*x509.Certificate) (Bundle, error) {
	var b Bundle
	for _, r := range roots {
		if r == nil || !r.IsCA {
			return Bundle{}, errors.New("a trust bundle holds only CA certificates")
		}
		if !b.Contains(r) {
			b.roots = append(b.roots, r)
		}
	}
	return b, nil
}

// Roots are the anchors, oldest first.
func (b Bundle) Roots() []*x509.Certificate { return slices.Clone(b.roots) }

// Contains reports whether r is in the bundle.
func (b Bundle) Contains(r *x509.Certificate) bool {
	return slices.ContainsFunc(b.roots, r.Equal)
}

// Pool is the bundle as an x509.CertPool.
func (b Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.roots {
		p.AddCert(r)
	}
	return p
}

// PEM is the bundle as concatenated PEM, what an SDS validation context or
// a certificate-provider root file holds.
func (b Bundle) PEM() []byte { return EncodeCertificatesPEM(b.roots) }

// Fingerprints are the SHA-256 fingerprints of the roots (hex), e.g. to
// record in status which roots a proxy has ACKed.
func (b Bundle) Fingerprints() []string {
	out := make([]string, len(b.roots))
	for i, r := range b.roots {
		out[i] = Fingerprint(r)
	}
	return out
}

// EarliestExpiry is the first NotAfter among the roots (zero when empty).
func (b Bundle) EarliestExpiry() time.Time {
	var t time.Time
	for _, r := range b.roots {
		if t.IsZero() || r.NotAfter.Before(t) {
			t = r.NotAfter
		}
	}
	return t
}

// Fingerprint is a certificate's SHA-256 fingerprint in hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// RotationPhase is a step of a root rotation.
type RotationPhase string

const (
	// PhaseStable: one root, trusted and signing.
	PhaseStable RotationPhase = "Stable"
	// PhaseAddNewRoot: the bundle holds the old and the new root; the old
	// one still signs. Waits until every connected proxy trusts the new
	// root, so a certificate from it is accepted everywhere.
	PhaseAddNewRoot RotationPhase = "AddNewRoot"
	// PhaseSwitchSigning: the new root signs (every workload is re-issued);
	// the bundle still holds both, because certificates from the old root
	// are still served. Waits until every proxy serves a certificate from
	// the new root.
	PhaseSwitchSigning RotationPhase = "SwitchSigning"
	// PhaseRetireOldRoot: the old root is removed from the bundle. Waits
	// until every proxy has ACKed a bundle without it; then the rotation is
	// over and the old root's key may be deleted.
	PhaseRetireOldRoot RotationPhase = "RetireOldRoot"
)

// Rotation is the trust state: which roots are trusted and which one signs.
// It is a pure value; Start, Advance and Abort return the next state. The
// caller persists it (MeshConfig status) and applies it: Bundle to every
// proxy, Signing to the Manager's issuer.
type Rotation struct {
	Phase RotationPhase
	// Current is the root being retired during a rotation, the only root
	// when Stable.
	Current *x509.Certificate
	// Next is the incoming root; nil when Stable.
	Next *x509.Certificate
}

// NewRotation is the Stable state with root.
func NewRotation(root *x509.Certificate) Rotation {
	return Rotation{Phase: PhaseStable, Current: root}
}

// Bundle is what every proxy must trust in this phase.
func (r Rotation) Bundle() Bundle {
	var b Bundle
	switch r.Phase {
	case PhaseAddNewRoot, PhaseSwitchSigning:
		b, _ = NewBundle(r.Current, r.Next)
	case PhaseRetireOldRoot:
		b, _ = NewBundle(r.Next)
	default:
		b, _ = NewBundle(r.Current)
	}
	return b
}

// Signing is the root whose chain new workload certificates must have.
func (r Rotation) Signing() *x509.Certificate {
	switch r.Phase {
	case PhaseSwitchSigning, PhaseRetireOldRoot:
		return r.Next
	}
	return r.Current
}

// Start begins rotating to next: AddNewRoot. Only from Stable.
func (r Rotation) Start(next *x509.Certificate) (Rotation, error) {
	if r.Phase != PhaseStable {
		return r, fmt.Errorf("a root rotation is already in progress (phase %s): finish or abort it first", r.Phase)
	}
	if next == nil || !next.IsCA {
		return r, errors.New("the new root must be a CA certificate")
	}
	if next.Equal(r.Current) {
		return r, errors.New("the new root is the current root")
	}
	return Rotation{Phase: PhaseAddNewRoot, Current: r.Current, Next: next}, nil
}

// Acks are the facts, observed by the xDS layer over connected proxies,
// that let a rotation move on. Each must hold for every connected proxy
// (vacuously true with none connected).
type Acks struct {
	// TrustNext: every proxy has ACKed a bundle that contains Next.
	TrustNext bool
	// ServeFromNext: every proxy has ACKed a workload certificate that
	// chains to Next (the Manager re-issued it after the signing switch).
	ServeFromNext bool
	// DroppedCurrent: every proxy has ACKed a bundle without Current.
	DroppedCurrent bool
}

// Advance moves one phase forward when the phase's condition holds, and
// says what it waits for otherwise. It never skips a phase: each step's
// effect must reach the proxies (and be ACKed) before the next is safe.
func (r Rotation) Advance(a Acks) (next Rotation, waiting string) {
	switch r.Phase {
	case PhaseAddNewRoot:
		if !a.TrustNext {
			return r, "waiting for every connected proxy to ACK a trust bundle with the new root"
		}
		r.Phase = PhaseSwitchSigning
	case PhaseSwitchSigning:
		if !a.TrustNext || !a.ServeFromNext {
			return r, "waiting for every connected proxy to serve a certificate issued from the new root"
		}
		r.Phase = PhaseRetireOldRoot
	case PhaseRetireOldRoot:
		if !a.DroppedCurrent {
			return r, "waiting for every connected proxy to ACK a trust bundle without the old root"
		}
		return Rotation{Phase: PhaseStable, Current: r.Next}, ""
	}
	return r, ""
}

// Abort cancels a rotation that has not switched signing yet: back to
// Stable with the current root. Once certificates from the new root exist,
// going back would strand them; finish the rotation instead.
func (r Rotation) Abort() (Rotation, error) {
	switch r.Phase {
	case PhaseStable:
		return r, nil
	case PhaseAddNewRoot:
		return NewRotation(r.Current), nil
	}
	return r, fmt.Errorf("cannot abort a root rotation in phase %s: certificates from the new root are already served; let it finish", r.Phase)
}
