package xds

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/translator/envoy"
)

// Node metadata that weft's bootstraps (sidecar and proxyless gRPC) set, and
// that the server reads to know what a proxy is. The node id is
// "<pod>.<namespace>".
const (
	MetaNamespace      = "NAMESPACE"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaLabels         = "LABELS"
	MetaPodIPs         = "INSTANCE_IPS"
	MetaProxyKind      = "PROXY_KIND" // "sidecar" (default) or "grpc"
	MetaAppProbes      = "APP_PROBES" // JSON: the pod's weft.dev/app-probes
)

// NodeInfo is what a proxy says it is, read from its node.
type NodeInfo struct {
	ID    string
	Proxy envoy.Proxy
	// TrustDomain is the mesh's when the stream was admitted (set by the
	// ADS): the node claims the identity
	// spiffe://<TrustDomain>/ns/<namespace>/sa/<service account>.
	TrustDomain string
	// Authenticated is set once an Authenticator vouched for the stream;
	// Auth says how (AuthCertificate, AuthToken, ...; AuthNone if not).
	Authenticated bool
	Auth          string
}

// ParseNode reads a proxy's node. An error names the missing or malformed
// field, and is returned to the proxy as InvalidArgument.
func ParseNode(n *corev3.Node) (NodeInfo, error) {
	if n == nil || n.Id == "" {
		return NodeInfo{}, fmt.Errorf("node.id is empty: set it to <pod>.<namespace> in the bootstrap")
	}
	md := n.GetMetadata().GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	info := NodeInfo{ID: n.Id, Proxy: envoy.Proxy{
		Namespace:      str(MetaNamespace),
		ServiceAccount: str(MetaServiceAccount),
		Labels:         map[string]string{},
	}}
	if info.Proxy.Namespace == "" || info.Proxy.ServiceAccount == "" {
		return NodeInfo{}, fmt.Errorf("node %s: metadata %s and %s are required", n.Id, MetaNamespace, MetaServiceAccount)
	}
	for k, v := range md[MetaLabels].GetStructValue().GetFields() {
		info.Proxy.Labels[k] = v.GetStringValue()
	}
	for _, ip := range strings.Split(str(MetaPodIPs), ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			info.Proxy.IPs = append(info.Proxy.IPs, ip)
		}
	}
	if raw := str(MetaAppProbes); raw != "" {
		if err := json.Unmarshal([]byte(raw), &info.Proxy.AppProbes); err != nil {
			return NodeInfo{}, fmt.Errorf("node %s: metadata %s is not the weft.dev/app-probes JSON: %v", n.Id, MetaAppProbes, err)
		}
	}
	switch k := str(MetaProxyKind); k {
	case "", "sidecar":
		info.Proxy.Kind = envoy.KindSidecar
	case "grpc":
		info.Proxy.Kind = envoy.KindGRPC
	default:
		return NodeInfo{}, fmt.Errorf("node %s: metadata %s=%q is not sidecar or grpc", n.Id, MetaProxyKind, k)
	}
	return info, nil
}

// groupKey identifies proxies that receive identical configuration: same
// kind, identity and labels. One build and one encoding serve the whole
// group, typically every replica of a Deployment. gRPC server listener
// names carry the pod's address, so gRPC proxies group by address too.
// (A sidecar group's named target ports are resolved with the first
// member's addresses: replicas of one pod template agree on them.)
type groupKey string

func keyOf(p envoy.Proxy, authenticated bool) groupKey {
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
	if p.Kind == envoy.KindGRPC {
		b.WriteString("|")
		b.WriteString(strings.Join(p.IPs, ","))
	}
	return groupKey(b.String())
}
