package xds

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/dataplane"
)

// NodeInfo is what a proxy says it is, read from its node.
type NodeInfo struct {
	ID    string
	Proxy dataplane.Proxy
	// TrustDomain is the mesh's when the stream was admitted (set by the
	// ADS): the node claims the identity
	// spiffe://<TrustDomain>/ns/<namespace>/sa/<service account>.
	TrustDomain string
	// Authenticated is set once an Authenticator vouched for the stream;
	// Auth says how (AuthCertificate, AuthToken, ...; AuthNone if not).
	Authenticated bool
	Auth          string
	// CredentialExpires is when the credential that authenticated the
	// stream expires (a token's exp, a certificate's NotAfter); zero if
	// unknown. The stream is closed then, and the proxy reconnects with
	// its current credential.
	CredentialExpires time.Time
}

// ParseNode reads a proxy's node (dataplane.ParseNode reads its metadata).
// An error names the missing or malformed field, and is returned to the
// proxy as InvalidArgument.
func ParseNode(n *corev3.Node) (NodeInfo, error) {
	p, err := dataplane.ParseNode(n.GetId(), n.GetMetadata().AsMap())
	if err != nil {
		return NodeInfo{}, err
	}
	return NodeInfo{ID: n.GetId(), Proxy: p}, nil
}

// groupKey identifies proxies that receive identical configuration: same
// kind, identity and labels (and zone, while the mesh routes by locality:
// locality.go). One build and one encoding serve the whole
// group, typically every replica of a Deployment. gRPC server listener
// names carry the pod's address, so gRPC proxies group by address too.
// (A sidecar group's named target ports are resolved from every endpoint
// with the group's identity, never from the first member's addresses
// alone: envoy.servedPorts, issue 12 d.)
type groupKey string

func keyOf(p dataplane.Proxy, authenticated bool) groupKey {
	var b strings.Builder
	fmt.Fprintf(&b, "%t|%d|%s|%s|", authenticated, p.Kind, p.Namespace, p.ServiceAccount)
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s,", k, p.Labels[k])
	}
	probes := make([]string, 0, len(p.AppProbes))
	for path, pr := range p.AppProbes {
		probes = append(probes, fmt.Sprintf("%s>%d%s%s%d", path, pr.Port, pr.Path, pr.Scheme, pr.TimeoutSeconds))
	}
	sort.Strings(probes)
	fmt.Fprintf(&b, "|%s", strings.Join(probes, ","))
	if p.Kind == dataplane.KindGRPC {
		b.WriteString("|")
		b.WriteString(strings.Join(p.IPs, ","))
	}
	if p.Zone != "" {
		// Set only while the mesh routes by locality (locality.go).
		fmt.Fprintf(&b, "|zone=%s/%s", p.Region, p.Zone)
	}
	return groupKey(b.String())
}
