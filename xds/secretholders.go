package xds

import (
	"slices"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

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
	h := a.secretHolders(false, preds)
	return h.Proxies, h.Satisfied
}

// SecretHolding is SecretHoldersNamed's answer.
type SecretHolding struct {
	Proxies   int
	Satisfied []int
	// Missing lists, per predicate, the node ids of the proxies that do
	// not satisfy it, sorted (a node id twice if it has two streams).
	Missing [][]string
}

// SecretHoldersNamed is SecretHolders that also names the proxies that do
// not satisfy each predicate: a root rotation shows which proxies hold it
// up, and closes their streams when its phase times out.
func (a *ADS) SecretHoldersNamed(preds ...func(HeldSecrets) bool) SecretHolding {
	return a.secretHolders(true, preds)
}

func (a *ADS) secretHolders(named bool, preds []func(HeldSecrets) bool) (out SecretHolding) {
	out.Satisfied = make([]int, len(preds))
	if named {
		out.Missing = make([][]string, len(preds))
	}
	miss := func(i int, c *conn) {
		if named {
			out.Missing[i] = append(out.Missing[i], c.node.ID)
		}
	}
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
		if err := proto.Unmarshal(e.value(), &s); err == nil {
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
		out.Proxies++
		held, known := m.c.heldSecrets(m.g.snap.Load())
		if !known {
			for i := range preds {
				miss(i, m.c)
			}
			continue
		}
		h := HeldSecrets{Chain: content(held[dataplane.WorkloadCertSecret]), Bundle: content(held[dataplane.TrustBundleSecret])}
		for i, p := range preds {
			if p(h) {
				out.Satisfied[i]++
			} else {
				miss(i, m.c)
			}
		}
	}
	for _, ids := range out.Missing {
		slices.Sort(ids)
	}
	return out
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
	ts := c.types[secretsAt]
	if ts == nil {
		return nil, true
	}
	if s == nil || len(ts.pending) > 0 {
		return nil, false
	}
	held = map[string]*encoded{}
	want := map[string]bool{}
	for name, e := range s.resources[secretsAt] {
		if ts.wildcard || ts.names.has(name) {
			held[name] = e
			want[name] = true
		}
	}
	if c.delta {
		for name, e := range held {
			if v, _ := ts.held.get(name); v != e.version() {
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
	var names *subscription
	if !ts.wildcard {
		names = &ts.names
	}
	if ts.sentVersion != s.typeVersion(resourcev3.SecretType, names) {
		return nil, false
	}
	return held, true
}
