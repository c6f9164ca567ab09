package offline

import (
	"encoding/json"
	"fmt"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// The xDS types `weft translate --type` selects.
const (
	TypeListeners = "listeners"
	TypeRoutes    = "routes"
	TypeClusters  = "clusters"
	TypeEndpoints = "endpoints"
	TypeAll       = "all"
)

// Types are the values of --type, in output order.
var Types = []string{TypeListeners, TypeRoutes, TypeClusters, TypeEndpoints, TypeAll}

// Report is `weft translate`'s output: every policy's status and each
// proxy's resources.
type Report struct {
	// Warnings are problems that belong to no policy (weft-controller
	// turns them into Events).
	Warnings []string `json:"warnings,omitempty"`
	// Status is every policy's Accepted and ResolvedRefs conditions, as
	// weft-controller writes them. Programmed needs connected proxies: it
	// is not shown offline.
	Status  []PolicyStatus `json:"status"`
	Proxies []ProxyReport  `json:"proxies"`
}

// PolicyStatus is one policy's conditions.
type PolicyStatus struct {
	Kind       string      `json:"kind"`
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Conditions []Condition `json:"conditions"`
}

// Condition is a metav1.Condition without the times the status writer
// fills in.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// ProxyReport is what one proxy receives.
type ProxyReport struct {
	// Pod is "namespace/name".
	Pod      string `json:"pod"`
	Kind     string `json:"kind"`
	Identity string `json:"identity"`
	// Policies are the policies (and generations) this configuration
	// carries: the ones whose Programmed condition waits for this proxy.
	Policies  []ir.PolicyRef    `json:"policies,omitempty"`
	Listeners []json.RawMessage `json:"listeners,omitempty"`
	Routes    []json.RawMessage `json:"routes,omitempty"`
	Clusters  []json.RawMessage `json:"clusters,omitempty"`
	Endpoints []json.RawMessage `json:"endpoints,omitempty"`
	// Secrets are the names of the SDS secrets the resources use;
	// weft-controller serves each from the proxy's own identity's
	// certificate, which is issued at run time and never shown here.
	Secrets []string `json:"secrets,omitempty"`
}

// Translate translates in as weft-controller does and builds the
// resources of every meshed pod, or, when proxy is not empty, only of the
// pod it names ("namespace/pod") or else of its ServiceAccount's pods
// ("namespace/serviceaccount"); typ (one of Types; "" is all)
// selects the xDS types shown.
func Translate(in *translator.Inputs, proxy, typ string) (*Report, error) {
	if typ == "" {
		typ = TypeAll
	}
	known := false
	for _, t := range Types {
		known = known || t == typ
	}
	if !known {
		return nil, fmt.Errorf("--type %q: want one of %v", typ, Types)
	}
	out := translator.Translate(in)
	r := &Report{Warnings: out.Warnings, Status: []PolicyStatus{}, Proxies: []ProxyReport{}}
	for k, conds := range out.Status {
		ps := PolicyStatus{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name}
		for _, c := range conds {
			ps.Conditions = append(ps.Conditions, Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
		}
		r.Status = append(r.Status, ps)
	}
	sort.Slice(r.Status, func(i, j int) bool {
		a, b := r.Status[i], r.Status[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	proxies, err := Proxies(in)
	if err != nil {
		return nil, err
	}
	if proxy != "" {
		if proxies, err = Find(proxies, proxy); err != nil {
			return nil, err
		}
	}
	b := NewBuilder(out.Mesh)
	for _, p := range proxies {
		res, err := b.Build(p.Node)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Key(), err)
		}
		pr := ProxyReport{Pod: p.Key(), Kind: dataplane.KindNameSidecar, Identity: p.Node.Identity(out.Mesh.TrustDomain), Policies: res.Policies}
		if p.Node.Kind == dataplane.KindGRPC {
			pr.Kind = dataplane.KindNameGRPC
		}
		want := func(t string) bool { return typ == TypeAll || typ == t }
		if want(TypeListeners) {
			pr.Listeners, err = marshal(res.Listeners)
		}
		if err == nil && want(TypeRoutes) {
			pr.Routes, err = marshal(res.Routes)
		}
		if err == nil && want(TypeClusters) {
			pr.Clusters, err = marshal(res.Clusters)
		}
		if err == nil && want(TypeEndpoints) {
			pr.Endpoints, err = marshal(res.Endpoints)
		}
		if err != nil {
			return nil, err
		}
		if typ == TypeAll {
			pr.Secrets = res.Secrets
		}
		r.Proxies = append(r.Proxies, pr)
	}
	return r, nil
}

// marshal renders messages through protojson, so that Any fields show
// their type and content; encoding/json then normalizes the spacing that
// protojson randomizes.
func marshal[T proto.Message](msgs []T) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		j, err := protojson.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// Output formats of -o.
const (
	OutputYAML = "yaml"
	OutputJSON = "json"
)

// Encode writes v as YAML or JSON (indented), with a trailing newline.
func Encode(v any, format string) ([]byte, error) {
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	switch format {
	case OutputJSON:
		return append(j, '\n'), nil
	case OutputYAML, "":
		return yaml.JSONToYAML(j)
	}
	return nil, fmt.Errorf("-o %q: want %s or %s", format, OutputYAML, OutputJSON)
}
