package builtin

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/certs"
)

// Issuer signs workload certificates with an intermediate of a root. It is
// safe for concurrent use; signing takes no lock beyond reading the current
// intermediate.
type Issuer struct {
	root                 *KeyPair
	clock                clock.PassiveClock
	intermediateLifetime time.Duration

	mu    sync.Mutex
	inter *KeyPair
}

// Options adjust NewIssuer; the zero value is the production setting.
type Options struct {
	Clock                clock.PassiveClock // default the real clock
	IntermediateLifetime time.Duration      // default DefaultIntermediateLifetime
}

var _ certs.Issuer = (*Issuer)(nil)

// NewIssuer signs under root, minting its first intermediate now.
func NewIssuer(root *KeyPair, o Options) (*Issuer, error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.IntermediateLifetime == 0 {
		o.IntermediateLifetime = DefaultIntermediateLifetime
	}
	i := &Issuer{root: root, clock: o.Clock, intermediateLifetime: o.IntermediateLifetime}
	if _, err := i.intermediate(o.Clock.Now()); err != nil {
		return nil, err
	}
	return i, nil
}

// Name implements certs.Issuer.
func (i *Issuer) Name() string { return "builtin" }

// Root is the trust anchor of everything this issuer signs.
func (i *Issuer) Root() *x509.Certificate { return i.root.Cert }

// Intermediate is the CA currently signing leaves.
func (i *Issuer) Intermediate() *x509.Certificate {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.inter.Cert
}

// Sign implements certs.Issuer. The leaf takes only the public key from the
// CSR; its names come from req.Identity.
func (i *Issuer) Sign(_ context.Context, req certs.SignRequest) (*certs.Issued, error) {
	if err := req.Identity.Validate(); err != nil {
		return nil, err
	}
	csr, err := certs.ParseCSR(req.CSR, req.Identity)
	if err != nil {
		return nil, err
	}
	now := i.clock.Now()
	inter, err := i.intermediate(now)
	if err != nil {
		return nil, err
	}
	leaf, err := SignLeaf(inter, req.Identity, csr.PublicKey, now, req.Lifetime)
	if err != nil {
		return nil, err
	}
	return &certs.Issued{Chain: []*x509.Certificate{leaf, inter.Cert}, Roots: []*x509.Certificate{i.root.Cert}}, nil
}

// intermediate returns the signing intermediate, minting a new one when
// half of the current one's life has passed. A leaf never outlives it (it is
// cut to the intermediate's expiry), so a leaf gets at least half the
// intermediate's lifetime: keep IntermediateLifetime at least twice the
// longest workload lifetime (the defaults: 1 year versus at most 8760h
// workloads, usually 24h).
func (i *Issuer) intermediate(now time.Time) (*KeyPair, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c := i.inter; c != nil {
		half := c.Cert.NotBefore.Add(c.Cert.NotAfter.Sub(c.Cert.NotBefore) / 2)
		if now.Before(half) && now.Before(c.Cert.NotAfter) {
			return c, nil
		}
	}
	if !now.Before(i.root.Cert.NotAfter) {
		return nil, fmt.Errorf("the root CA %q expired at %s; rotate the root", i.root.Cert.Subject, i.root.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	inter, err := NewIntermediate(i.root, now, i.intermediateLifetime)
	if err != nil {
		return nil, err
	}
	i.inter = inter
	return inter, nil
}
