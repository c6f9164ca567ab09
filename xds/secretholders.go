package xds

import (
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/dataplane"
)

// Read-only queries over what connected proxies hold of their SDS secrets,
// for the trust-bundle root rotation (certs.Rotation): each of its steps
// may move on only when every connected proxy has ACKed the secrets built
// from the step's material.

// HeldSecrets is the SDS content one proxy has ACKed: its certificate chain
// and its trust bundle, as PEM. A field is nil when the proxy does not hold
// that secret (it has not subscribed to it, or none was available).
type HeldSecrets struct {
	Chain, Bundle []byte
}

// SecretHolders goes over every connected proxy that is served secrets
// (authenticated sidecars) and counts, for each predicate, the proxies
// whose ACKed secrets satisfy it; proxies is how many were looked at.
//
// What a proxy holds is known when it has answered every secret response
// and what it accepted is exactly its group's current secrets (a version
// it NACKed is never counted as held): the predicates are then asked
// about that content. A proxy that has not
// subscribed to secrets holds nothing — it presents no certificate and
// validates no peer yet, and what it receives later is built from the
// material current then — and the predicates are asked about
// HeldSecrets{}, so each must say what holding nothing means. Any other
// proxy (a response unanswered, a NACK, a newer snapshot not yet sent)
// may still hold older content and satisfies no predicate.
func (a *ADS) SecretHolders(preds ...func(HeldSecrets) bool) (proxies int, satisfied []int) {
	satisfied = make([]int, len(preds))
	a.mu.Lock()
	type member struct {
		c *conn
		g *group
	}
	var members []member
	for _, g := range a.groups {
		if !a.servesSecrets(g) {
			continue
		}
		for c := range g.conns {
			members = append(members, member{c, g})
		}
	}
	a.mu.Unlock()
	// Groups share their encoded secrets; decode each once.
	decoded := map[*encoded][]byte{}
	content := func(e *encoded) []byte {
		if e == nil {
			return nil
		}
		if b, ok := decoded[e]; ok {
			return b
		}
		var s tlsv3.Secret
		var b []byte
		if err := e.any.UnmarshalTo(&s); err == nil {
			if tc := s.GetTlsCertificate(); tc != nil {
				b = tc.GetCertificateChain().GetInlineBytes()
			} else if vc := s.GetValidationContext(); vc != nil {
				b = vc.GetTrustedCa().GetInlineBytes()
			}
		}
		decoded[e] = b
		return b
	}
	for _, m := range members {
		proxies++
		held, known := m.c.heldSecrets(m.g.snap.Load())
		if !known {
			continue
		}
		h := HeldSecrets{Chain: content(held[dataplane.WorkloadCertSecret]), Bundle: content(held[dataplane.TrustBundleSecret])}
		for i, p := range preds {
			if p(h) {
				satisfied[i]++
			}
		}
	}
	return proxies, satisfied
}

// heldSecrets returns the current snapshot's secret resources that the
// proxy holds, by name, and whether what it holds is known to be exactly
// that: known is false while a secret response is unanswered, and when
// what the proxy accepted (Delta: typeState.held, never a version it
// NACKed; SotW: the last response, when it was ACKed) is other content
// than the snapshot's. A proxy that never subscribed to secrets knowingly
// holds nothing.
func (c *conn) heldSecrets(s *snapshot) (held map[string]*encoded, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[resourcev3.SecretType]
	if ts == nil {
		return nil, true
	}
	if s == nil || len(ts.pending) > 0 {
		return nil, false
	}
	held = map[string]*encoded{}
	want := map[string]bool{}
	for name, e := range s.resources[resourcev3.SecretType] {
		if ts.wildcard || ts.names[name] {
			held[name] = e
			want[name] = true
		}
	}
	if c.delta {
		for name, e := range held {
			if v, _ := ts.held.get(name); v != e.version {
				return nil, false
			}
		}
		withdrawn := false
		ts.held.each(func(name, _ string) {
			if !want[name] {
				withdrawn = true // and the removal not yet accepted
			}
		})
		if withdrawn {
			return nil, false
		}
		return held, true
	}
	// SotW: after a NACK the proxy holds the response before the rejected
	// one, whose content is no longer known.
	if ts.lastNack != nil {
		return nil, false
	}
	var names map[string]bool
	if !ts.wildcard {
		names = ts.names
	}
	if ts.sentVersion != s.typeVersion(resourcev3.SecretType, names) {
		return nil, false
	}
	return held, true
}
