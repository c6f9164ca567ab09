package dataplane

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Node metadata keys that weft's bootstraps (the sidecar's, `weft agent`'s
// and the proxyless application's) set and weft-controller reads. The node
// id is "<pod>.<namespace>". NodeMetadata is the one writer, ParseNode the
// one reader.
const (
	MetaPodName        = "POD_NAME"
	MetaNamespace      = "NAMESPACE"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaLabels         = "LABELS"
	MetaPodIPs         = "INSTANCE_IPS" // comma-separated
	MetaProxyKind      = "PROXY_KIND"   // KindNameSidecar (default) or KindNameGRPC
	MetaAppProbes      = "APP_PROBES"   // JSON: the pod's weft.dev/app-probes
)

// The values of MetaProxyKind.
const (
	KindNameSidecar = "sidecar"
	KindNameGRPC    = "grpc"
)

// NodeMeta is what a bootstrap writes into its node's metadata. Its fields
// are strings because a sidecar's bootstrap holds kubelet references
// ("$(WEFT_POD_NAMESPACE)") that are expanded when the container starts.
type NodeMeta struct {
	PodName        string
	Namespace      string
	ServiceAccount string
	// PodIPs are comma-separated (the downward API's status.podIPs).
	PodIPs string
	Labels map[string]string
	// Kind is KindNameSidecar or KindNameGRPC.
	Kind string
	// AppProbes is the weft.dev/app-probes annotation (JSON), or empty.
	AppProbes string
}

// NodeMetadata returns the node metadata for m, as the JSON object that a
// bootstrap's node.metadata holds (and structpb.NewStruct accepts). Empty
// fields are left out.
func NodeMetadata(m NodeMeta) map[string]any {
	labels := map[string]any{}
	for k, v := range m.Labels {
		labels[k] = v
	}
	md := map[string]any{
		MetaNamespace:      m.Namespace,
		MetaServiceAccount: m.ServiceAccount,
		MetaLabels:         labels,
	}
	for k, v := range map[string]string{MetaPodName: m.PodName, MetaPodIPs: m.PodIPs, MetaProxyKind: m.Kind, MetaAppProbes: m.AppProbes} {
		if v != "" {
			md[k] = v
		}
	}
	return md
}

// ParseNode reads what a proxy says it is from its node id and metadata
// (as structpb.Struct.AsMap returns it). An error names the missing or
// malformed field.
func ParseNode(id string, md map[string]any) (Proxy, error) {
	if id == "" {
		return Proxy{}, fmt.Errorf("node.id is empty: set it to <pod>.<namespace> in the bootstrap")
	}
	str := func(k string) string { s, _ := md[k].(string); return s }
	p := Proxy{
		Namespace:      str(MetaNamespace),
		ServiceAccount: str(MetaServiceAccount),
		Labels:         map[string]string{},
	}
	if p.Namespace == "" || p.ServiceAccount == "" {
		return Proxy{}, fmt.Errorf("node %s: metadata %s and %s are required", id, MetaNamespace, MetaServiceAccount)
	}
	if labels, ok := md[MetaLabels].(map[string]any); ok {
		for k, v := range labels {
			s, _ := v.(string)
			p.Labels[k] = s
		}
	}
	for _, ip := range strings.Split(str(MetaPodIPs), ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			p.IPs = append(p.IPs, ip)
		}
	}
	if raw := str(MetaAppProbes); raw != "" {
		if err := json.Unmarshal([]byte(raw), &p.AppProbes); err != nil {
			return Proxy{}, fmt.Errorf("node %s: metadata %s is not the weft.dev/app-probes JSON: %v", id, MetaAppProbes, err)
		}
		if err := ValidateAppProbes(p.AppProbes); err != nil {
			return Proxy{}, fmt.Errorf("node %s: metadata %s: %v", id, MetaAppProbes, err)
		}
	}
	switch k := str(MetaProxyKind); k {
	case "", KindNameSidecar:
		p.Kind = KindSidecar
	case KindNameGRPC:
		p.Kind = KindGRPC
	default:
		return Proxy{}, fmt.Errorf("node %s: metadata %s=%q is not %s or %s", id, MetaProxyKind, k, KindNameSidecar, KindNameGRPC)
	}
	return p, nil
}
