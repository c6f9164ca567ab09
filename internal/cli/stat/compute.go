package stat

import (
	"fmt"
	"math"
	"sort"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// Kind is what a Table's rows are.
type Kind string

const (
	// Services: the calls made to each Service, read from the callers'
	// outbound clusters; a TrafficSplit's backends are grouped under its
	// root Service.
	Services Kind = "svc"
	// Deployments: the calls each Deployment's pods served, read from
	// their sidecars' inbound clusters.
	Deployments Kind = "deploy"
	// Pods: the calls each pod served (inbound clusters).
	Pods Kind = "pod"
)

// Pod is the pod a source was read from.
type Pod struct {
	Namespace, Name string
	// Deployment owns the pod ("" when none does).
	Deployment string
}

// Source is one place statistics were read from, twice.
type Source struct {
	// Name is NAMESPACE/POD or the URL read.
	Name string
	// Pod is set when the source is a pod.
	Pod *Pod
	// Window is what it counted between the two reads; nil when Err.
	Window *Window
	Err    error
}

// Split is what `weft stat` needs of a TrafficSplit.
type Split struct {
	Namespace, Root string
	// Port is the root Service port split; 0 splits every port.
	Port int
	// Conditional splits (spec.matches) take only some requests: their
	// weights are not the root's whole split.
	Conditional bool
	Backends    []SplitBackend
}

// SplitBackend is one backend Service of a Split.
type SplitBackend struct {
	Service string
	// Port is the backend's port; 0 means the port the client called.
	Port   int
	Weight int32
}

// SplitsFrom reads TrafficSplits.
func SplitsFrom(ts []v1alpha1.TrafficSplit) []Split {
	var out []Split
	for _, t := range ts {
		s := Split{Namespace: t.Namespace, Root: t.Spec.RootService.Name, Conditional: len(t.Spec.Matches) > 0}
		if p := t.Spec.RootService.Port; p != nil {
			s.Port = int(*p)
		}
		for _, b := range t.Spec.Backends {
			sb := SplitBackend{Service: b.Name, Weight: v1alpha1.DefaultBackendWeight}
			if b.Port != nil {
				sb.Port = int(*b.Port)
			}
			if b.Weight != nil {
				sb.Weight = *b.Weight
			}
			s.Backends = append(s.Backends, sb)
		}
		out = append(out, s)
	}
	return out
}

// Options choose a Table's rows.
type Options struct {
	Kind Kind
	// Namespace keeps the rows of one namespace; "" keeps every one.
	Namespace string
	// Name keeps one Service (or the split it is a root or backend of),
	// Deployment or pod; "" keeps every one.
	Name string
	// Splits group Services (Kind Services).
	Splits []Split
}

// Table is `weft stat`'s answer.
type Table struct {
	Kind Kind `json:"kind"`
	// Namespace is Options.Namespace ("" for every namespace).
	Namespace string `json:"namespace,omitempty"`
	// Seconds is the longest window read.
	Seconds float64 `json:"windowSeconds"`
	// Sources is how many sources were read (both times).
	Sources int   `json:"sources"`
	Rows    []Row `json:"rows"`
	// Idle counts the rows left out for having no requests, responses or
	// connections in the window (every Service a sidecar knows has a
	// cluster); naming one in Options shows it anyway.
	Idle int `json:"idle,omitempty"`
	// Problems are sources that could not be read, and why.
	Problems []string `json:"problems,omitempty"`
}

// Row is one Service, Deployment or pod; a split root's Backends are the
// Services its requests went to.
type Row struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// RequestsPerSecond is the rate of requests sent (each retry counts).
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// SuccessRate is the share of responses that were not 5xx (0 to 1);
	// nil without responses.
	SuccessRate *float64 `json:"successRate,omitempty"`
	// Latency percentiles in milliseconds; nil without observations.
	P50 *float64 `json:"p50Ms,omitempty"`
	P95 *float64 `json:"p95Ms,omitempty"`
	P99 *float64 `json:"p99Ms,omitempty"`
	// Connections is the open TCP connections, summed over sources.
	Connections float64 `json:"tcpConnections"`
	// Share is a backend's share of the requests its split's backends got
	// (the observed split); Weight its share of the split's declared weights, when one
	// unconditional TrafficSplit covers the root.
	Share  *float64 `json:"observedShare,omitempty"`
	Weight *float64 `json:"weightShare,omitempty"`
	// Ports read, and how many sources counted the row.
	Ports    []int `json:"ports,omitempty"`
	Sources  int   `json:"sources"`
	Backends []Row `json:"backends,omitempty"`
}

// acc sums rates over clusters and sources.
type acc struct {
	requests  float64
	responses map[string]float64
	buckets   []Bucket
	conns     float64
	ports     map[int]bool
	sources   map[string]bool
}

func newAcc() *acc {
	return &acc{responses: map[string]float64{}, ports: map[int]bool{}, sources: map[string]bool{}}
}

func (a *acc) add(source string, port int, c *Counters, seconds float64) {
	a.sources[source] = true
	a.ports[port] = true
	a.conns += c.Connections
	if seconds <= 0 {
		return
	}
	a.requests += c.Requests / seconds
	for class, v := range c.Responses {
		a.responses[class] += v / seconds
	}
	for _, b := range c.Buckets {
		a.buckets = addBucket(a.buckets, b.UpperBound, b.Count/seconds)
	}
}

func (a *acc) merge(o *acc) {
	a.requests += o.requests
	a.conns += o.conns
	for k, v := range o.responses {
		a.responses[k] += v
	}
	for _, b := range o.buckets {
		a.buckets = addBucket(a.buckets, b.UpperBound, b.Count)
	}
	for p := range o.ports {
		a.ports[p] = true
	}
	for s := range o.sources {
		a.sources[s] = true
	}
}

func (a *acc) row(ns, name string) Row {
	r := Row{Namespace: ns, Name: name, RequestsPerSecond: a.requests, Connections: a.conns, Sources: len(a.sources)}
	var all, bad float64
	for class, v := range a.responses {
		all += v
		if class == "5" {
			bad += v
		}
	}
	if all > 0 {
		r.SuccessRate = ptr((all - bad) / all)
	}
	for q, dst := range map[float64]**float64{0.5: &r.P50, 0.95: &r.P95, 0.99: &r.P99} {
		if v := Quantile(q, a.buckets); !math.IsNaN(v) && !math.IsInf(v, 0) {
			*dst = ptr(v)
		}
	}
	for p := range a.ports {
		r.Ports = append(r.Ports, p)
	}
	sort.Ints(r.Ports)
	return r
}

func ptr(f float64) *float64 { return &f }

type key struct{ ns, name string }

// Compute sums the sources' windows into a Table: rates are each source's
// increase over its own window, summed over sources (sum(rate(...)) in
// PromQL); latency percentiles come from the summed bucket rates, per le
// (histogram_quantile over sum by (le)).
func Compute(sources []Source, o Options) *Table {
	t := &Table{Kind: o.Kind, Namespace: o.Namespace}
	if t.Kind == "" {
		t.Kind = Services
	}
	rows := map[key]*acc{}
	backends := map[key]map[string]*acc{} // split root → backend Service → its sum
	get := func(m map[key]*acc, k key) *acc {
		if m[k] == nil {
			m[k] = newAcc()
		}
		return m[k]
	}
	for _, s := range sources {
		if s.Err != nil {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: %v", s.Name, s.Err))
			continue
		}
		if s.Window == nil {
			continue
		}
		t.Sources++
		t.Seconds = max(t.Seconds, s.Window.Seconds)
		if t.Kind == Deployments && s.Pod == nil {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: not a pod; weft stat deploy groups pods by their Deployment (read URLs with svc or pod)", s.Name))
			continue
		}
		for name, c := range s.Window.Clusters {
			cl, ok := ParseCluster(name)
			if !ok {
				continue
			}
			switch t.Kind {
			case Services:
				if cl.Direction != Outbound {
					continue
				}
				if root, ok := splitOf(o.Splits, cl); ok {
					k := key{cl.Namespace, root}
					get(rows, k).add(s.Name, cl.Port, c, s.Window.Seconds)
					if backends[k] == nil {
						backends[k] = map[string]*acc{}
					}
					b := backends[k][cl.Service]
					if b == nil {
						b = newAcc()
						backends[k][cl.Service] = b
					}
					b.add(s.Name, cl.Port, c, s.Window.Seconds)
					continue
				}
				get(rows, key{cl.Namespace, cl.Service}).add(s.Name, cl.Port, c, s.Window.Seconds)
			case Pods, Deployments:
				if cl.Direction != Inbound {
					continue
				}
				k := key{name: s.Name}
				if s.Pod != nil {
					k = key{s.Pod.Namespace, s.Pod.Name}
					if t.Kind == Deployments {
						if s.Pod.Deployment == "" {
							continue
						}
						k.name = s.Pod.Deployment
					}
				}
				get(rows, k).add(s.Name, cl.Port, c, s.Window.Seconds)
			}
		}
	}
	for k, a := range rows {
		if o.Namespace != "" && k.ns != o.Namespace {
			continue
		}
		if o.Name != "" && k.name != o.Name && backends[k][o.Name] == nil {
			continue
		}
		r := a.row(k.ns, k.name)
		if o.Name == "" && r.RequestsPerSecond == 0 && r.Connections == 0 && r.SuccessRate == nil {
			t.Idle++
			continue
		}
		if bs := backends[k]; bs != nil {
			weights := declared(o.Splits, k)
			var split float64 // requests the backends got (the root's row may add unsplit ports)
			for _, b := range bs {
				split += b.requests
			}
			for svc, b := range bs {
				if _, ok := weights[svc]; !ok && b.requests == 0 && b.conns == 0 {
					continue // the root's own cluster, not a backend, and idle
				}
				br := b.row(k.ns, svc)
				if split > 0 {
					br.Share = ptr(b.requests / split)
				}
				if w, ok := weights[svc]; ok {
					br.Weight = ptr(w)
				}
				r.Backends = append(r.Backends, br)
			}
			// A declared backend that got nothing is part of the answer.
			for svc, w := range weights {
				if bs[svc] == nil {
					br := Row{Namespace: k.ns, Name: svc, Weight: ptr(w)}
					if split > 0 {
						br.Share = ptr(0)
					}
					r.Backends = append(r.Backends, br)
				}
			}
			sort.Slice(r.Backends, func(i, j int) bool { return r.Backends[i].Name < r.Backends[j].Name })
		}
		t.Rows = append(t.Rows, r)
	}
	sort.Slice(t.Rows, func(i, j int) bool {
		if t.Rows[i].Namespace != t.Rows[j].Namespace {
			return t.Rows[i].Namespace < t.Rows[j].Namespace
		}
		return t.Rows[i].Name < t.Rows[j].Name
	})
	sort.Strings(t.Problems)
	return t
}

// splitOf is the root Service of the TrafficSplit whose root or backend
// cluster cl is. Every request to a backend's cluster counts for the
// split: cluster statistics cannot tell a call through the root from a
// direct call to the backend.
func splitOf(splits []Split, cl Cluster) (string, bool) {
	best := ""
	for _, s := range splits {
		if s.Namespace != cl.Namespace {
			continue
		}
		portOK := s.Port == 0 || cl.Port == s.Port
		member := cl.Service == s.Root && portOK
		for _, b := range s.Backends {
			if b.Service != cl.Service {
				continue
			}
			if b.Port != 0 && cl.Port == b.Port || b.Port == 0 && portOK {
				member = true
			}
		}
		if member && (best == "" || s.Root < best) {
			best = s.Root
		}
	}
	return best, best != ""
}

// declared is each backend's share of the weights of the root's one
// unconditional TrafficSplit (none when there is not exactly one).
func declared(splits []Split, root key) map[string]float64 {
	var found *Split
	for i, s := range splits {
		if s.Namespace != root.ns || s.Root != root.name || s.Conditional {
			continue
		}
		if found != nil {
			return nil
		}
		found = &splits[i]
	}
	if found == nil {
		return nil
	}
	var sum float64
	for _, b := range found.Backends {
		sum += float64(b.Weight)
	}
	if sum == 0 {
		return nil
	}
	out := map[string]float64{}
	for _, b := range found.Backends {
		out[b.Service] += float64(b.Weight) / sum
	}
	return out
}
