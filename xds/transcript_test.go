package xds

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// The transcript tests drive Delta and State-of-the-World streams by hand,
// without gRPC or goroutines (deltaRequest, sendDelta and sendSotW called
// as serve calls them), through every case the per-stream bookkeeping has
// to get right — NACK, reconnect with initial versions, unsubscribe and
// re-subscribe, wildcard on and off, a resource removed and added back,
// secrets (a per-stream difference), a stream that stops answering (and is
// deferred), two streams of one group at different paces — and compare
// every response sent, byte for byte in names, versions, removals and
// nonces, with a transcript recorded before the bookkeeping was made
// O(what differs) (docs/design/095). `go test ./xds -run TestTranscript
// -update-transcripts` records it again: read the diff.

var updateTranscripts = flag.Bool("update-transcripts", false, "rewrite testdata/transcripts")

type transcriptSecrets struct{ version int }

func (transcriptSecrets) Acquire(string) {}
func (transcriptSecrets) Release(string) {}
func (s *transcriptSecrets) Material(id string) ([]byte, []byte, []byte, bool) {
	v := fmt.Sprint(s.version)
	return []byte("chain of " + id + v), []byte("key of " + id + v), []byte("bundle" + v), true
}

// tmesh is the transcripts' mesh: 6 Services in 2 namespaces, every one
// exported, splits on svc-0 and svc-3 whose weight w the test changes,
// without svc-5 when drop5.
type tmesh struct {
	w     int32
	drop5 bool
	moved int // svc-1's first endpoint address, changed by UpdateEndpoints
}

func (m tmesh) inputs() *translator.Inputs {
	in := testmesh.Generate(testmesh.Options{Services: 6, Namespaces: 2, EndpointsPerService: 2, SplitEvery: 3, ExportAll: true})
	for _, s := range in.TrafficSplits {
		*s.Spec.Backends[0].Weight, *s.Spec.Backends[1].Weight = 100-m.w, m.w
	}
	if m.moved > 0 {
		in.EndpointSlices[1].Endpoints[0].Addresses = []string{fmt.Sprintf("10.250.0.%d", m.moved)}
	}
	if m.drop5 {
		in.Services = in.Services[:5]
		in.EndpointSlices = in.EndpointSlices[:5]
	}
	return in
}

func (m tmesh) mesh() *ir.Mesh { return translator.Translate(m.inputs()).Mesh }

// moveEndpoint changes svc-1's first endpoint, as an endpoint-only update.
func (m *tmesh) moveEndpoint(a *ADS) {
	m.moved++
	key := ir.ServiceKey{Namespace: testmesh.Namespace(1), Name: "svc-1"}
	slice := m.inputs().EndpointSlices[1]
	a.mu.Lock()
	prev := a.mesh
	a.mu.Unlock()
	a.UpdateEndpoints(translator.UpdateEndpoints(prev, key, []*discoveryv1.EndpointSlice{slice}, func(string, string) *corev1.Pod { return nil }), []ir.ServiceKey{key}, time.Now())
}

// recStream records what the server sends on either protocol.
type recStream struct {
	grpc.ServerStream
	delta []*discoveryv3.DeltaDiscoveryResponse
	sotw  []*discoveryv3.DiscoveryResponse
}

func (s *recStream) Context() context.Context { return context.Background() }

// SendMsg takes what sendDelta sends: the response with its encodings.
func (s *recStream) SendMsg(m any) error {
	if d, ok := m.(*deltaOut); ok {
		return s.Send(d.response())
	}
	return s.ServerStream.SendMsg(m)
}

func (s *recStream) Send(r *discoveryv3.DeltaDiscoveryResponse) error {
	s.delta = append(s.delta, r)
	return nil
}
func (s *recStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) { panic("not used") }

type sotwStream struct{ *recStream }

func (s sotwStream) Send(r *discoveryv3.DiscoveryResponse) error {
	s.sotw = append(s.sotw, r)
	return nil
}
func (s sotwStream) Recv() (*discoveryv3.DiscoveryRequest, error) { panic("not used") }

// driver is one hand-driven stream and the transcript it writes.
type driver struct {
	t     *testing.T
	a     *ADS
	c     *conn
	s     *recStream
	name  string
	out   *strings.Builder
	seen  int                          // Delta responses already written
	seenS int                          // SotW responses already written
	names map[string]map[string]string // Delta: type → name → version the client holds
}

func transcriptNode(id, ns, sa string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: sa,
		dataplane.MetaLabels: map[string]any{"app": sa}})
	return &corev3.Node{Id: id, Metadata: md}
}

func connect(t *testing.T, a *ADS, out *strings.Builder, name string, delta, authenticated bool, n *corev3.Node) *driver {
	t.Helper()
	ni, err := ParseNode(n)
	if err != nil {
		t.Fatal(err)
	}
	ni.Authenticated = authenticated
	c := a.newConn(delta, ni)
	c.anonymous = !authenticated
	if err := a.join(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.leave(c) })
	fmt.Fprintf(out, "== %s connects (delta=%t)\n", name, delta)
	return &driver{t: t, a: a, c: c, s: &recStream{}, name: name, out: out, names: map[string]map[string]string{}}
}

func (d *driver) step(format string, args ...any) {
	fmt.Fprintf(d.out, "-- %s: %s\n", d.name, fmt.Sprintf(format, args...))
}

// req sends a Delta request and writes what it answered.
func (d *driver) req(r *discoveryv3.DeltaDiscoveryRequest) {
	d.t.Helper()
	if err := d.a.deltaRequest(d.s, d.c, r); err != nil {
		d.t.Fatal(err)
	}
	d.flush()
}

// sreq sends a SotW request.
func (d *driver) sreq(r *discoveryv3.DiscoveryRequest) {
	d.t.Helper()
	if err := d.a.sotwRequest(sotwStream{d.s}, d.c, r); err != nil {
		d.t.Fatal(err)
	}
	d.flush()
}

// push runs what serve runs when the stream is woken (if it was).
func (d *driver) push() {
	d.t.Helper()
	select {
	case <-d.c.notify:
	default:
		fmt.Fprintf(d.out, "   (%s not woken)\n", d.name)
		return
	}
	for _, t := range pushOrder {
		d.c.mu.Lock()
		subscribed := d.c.types.get(t) != nil
		d.c.mu.Unlock()
		if !subscribed {
			continue
		}
		var err error
		if d.c.delta {
			err = d.a.sendDelta(d.s, d.c, t)
		} else {
			err = d.a.sendSotW(sotwStream{d.s}, d.c, t, false)
		}
		if err != nil {
			d.t.Fatal(err)
		}
	}
	d.flush()
}

// flush writes the responses sent since the last flush, and the stream's
// state as the registry and status readers see it.
func (d *driver) flush() {
	for _, r := range d.s.delta[d.seen:] {
		var parts []string
		for _, res := range r.Resources {
			parts = append(parts, "+"+res.Name+"@"+res.Version)
			if d.names[r.TypeUrl] == nil {
				d.names[r.TypeUrl] = map[string]string{}
			}
			d.names[r.TypeUrl][res.Name] = res.Version
		}
		for _, n := range r.RemovedResources {
			parts = append(parts, "-"+n)
			delete(d.names[r.TypeUrl], n)
		}
		fmt.Fprintf(d.out, "   %s <- %s nonce=%s sys=%s %s\n", d.name, shortType(r.TypeUrl), r.Nonce, r.SystemVersionInfo, strings.Join(parts, " "))
	}
	d.seen = len(d.s.delta)
	if !d.c.delta {
		for _, r := range d.s.sotw[d.seenS:] {
			var names []string
			for _, a := range r.Resources {
				names = append(names, fmt.Sprintf("%d", len(a.Value)))
			}
			fmt.Fprintf(d.out, "   %s <- %s nonce=%s version=%s sizes=%s\n", d.name, shortType(r.TypeUrl), r.Nonce, r.VersionInfo, strings.Join(names, ","))
		}
		d.seenS = len(d.s.sotw)
	}
	nack := "none"
	if n := d.c.nack(); n != nil {
		nack = fmt.Sprintf("%s %s %v+%d", shortType(n.Type), n.Nonce, n.Resources, n.MoreResources)
	}
	held, known := d.c.heldSecrets(d.c.group.snap.Load())
	var hs []string
	for n, e := range held {
		hs = append(hs, n+"@"+e.version())
	}
	sort.Strings(hs)
	fmt.Fprintf(d.out, "   %s state: acked=%d nack=%s secrets=%v known=%t\n", d.name, d.c.fullyAcked(), nack, hs, known)
}

// pending returns the nonces of the responses not answered yet, oldest
// first, of one type (every type if t is "").
func (d *driver) unanswered(t string) []*discoveryv3.DeltaDiscoveryResponse {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	var out []*discoveryv3.DeltaDiscoveryResponse
	for _, r := range d.s.delta {
		if t != "" && r.TypeUrl != t {
			continue
		}
		if ts := d.c.types.get(r.TypeUrl); ts != nil {
			if _, ok := ts.pending[r.Nonce]; ok {
				out = append(out, r)
			}
		}
	}
	return out
}

// ackAll ACKs every unanswered Delta response in order.
func (d *driver) ackAll() {
	d.t.Helper()
	for _, r := range d.unanswered("") {
		d.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
	}
}

func (d *driver) nackType(t string) {
	d.t.Helper()
	for _, r := range d.unanswered(t) {
		d.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce, ErrorDetail: &rpcstatus.Status{Code: 3, Message: "rejected by the test"}})
	}
}

// held returns the names the client holds of a type.
func (d *driver) held(t string) []string {
	var out []string
	for n := range d.names[t] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func checkTranscript(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "transcripts", name+".txt")
	if *updateTranscripts {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs from the recorded transcript at line %d:\n got: %s\nwant: %s", path, i+1, g, w)
			}
		}
	}
}

func subscribe(t string, names ...string) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: names}
}

// envoyLike subscribes as Envoy does: wildcard CDS and LDS, then EDS and
// RDS by the names received.
func (d *driver) envoyLike() {
	d.step("subscribe CDS, LDS (wildcard)")
	d.req(subscribe(resourcev3.ClusterType))
	d.req(subscribe(resourcev3.ListenerType))
	d.step("subscribe EDS, RDS by name")
	d.req(subscribe(resourcev3.EndpointType, d.held(resourcev3.ClusterType)...))
	var routes []string
	snap := d.c.group.snap.Load()
	for n := range snap.resources[routesAt] {
		routes = append(routes, n)
	}
	sort.Strings(routes)
	d.req(subscribe(resourcev3.RouteType, routes...))
}

func TestTranscriptDelta(t *testing.T) {
	var out strings.Builder
	a := NewADS(logr.Discard())
	m := tmesh{w: 10}
	a.Update(m.mesh(), time.Now())
	e := connect(t, a, &out, "envoy", true, false, transcriptNode("p-0.ns-0", testmesh.Namespace(0), "svc-0"))
	w := connect(t, a, &out, "wild", true, false, transcriptNode("p-1.ns-1", testmesh.Namespace(1), "svc-1"))
	// twin shares e's group, and falls behind.
	twin := connect(t, a, &out, "twin", true, false, transcriptNode("p-2.ns-0", testmesh.Namespace(0), "svc-0"))
	e.envoyLike()
	e.ackAll()
	twin.envoyLike()
	twin.ackAll()
	w.step("subscribe every type with wildcards")
	for _, typ := range pushOrder[1:] {
		w.req(subscribe(typ, "*"))
	}
	w.ackAll()
	everyone := []*driver{e, w, twin}
	pushAll := func(ack ...*driver) {
		for _, d := range everyone {
			d.push()
		}
		for _, d := range ack {
			d.ackAll()
		}
	}

	e.step("weight change")
	m.w = 20
	a.Update(m.mesh(), time.Now())
	pushAll(e, w, twin)

	e.step("endpoint change")
	m.moveEndpoint(a)
	pushAll(e, w)
	twin.step("twin has not ACKed; two more changes")
	m.moveEndpoint(a)
	pushAll(e, w)
	m.w = 30
	a.Update(m.mesh(), time.Now())
	pushAll(e, w)
	twin.ackAll()

	e.step("svc-5 removed")
	m.drop5 = true
	a.Update(m.mesh(), time.Now())
	pushAll(e, w, twin)
	e.step("svc-5 back")
	m.drop5 = false
	a.Update(m.mesh(), time.Now())
	pushAll(w, twin)
	e.step("envoy re-subscribes EDS to the new cluster")
	e.req(subscribe(resourcev3.EndpointType, "outbound|80||svc-5.ns-1.svc.cluster.local"))
	e.ackAll()

	e.step("NACK of the next route change")
	m.w = 40
	a.Update(m.mesh(), time.Now())
	pushAll(w, twin)
	e.push()
	e.nackType(resourcev3.RouteType)
	e.ackAll()
	e.step("an endpoint change while the NACK stands")
	m.moveEndpoint(a)
	pushAll(e, w, twin)
	e.step("the next route change is ACKed")
	m.w = 50
	a.Update(m.mesh(), time.Now())
	pushAll(e, w, twin)

	e.step("unsubscribe an endpoint name, change it, subscribe it again")
	eds := e.held(resourcev3.EndpointType)
	e.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: eds[:2]})
	m.moveEndpoint(a)
	pushAll(e, w, twin)
	e.req(subscribe(resourcev3.EndpointType, eds[:2]...))
	e.ackAll()
	w.step("unsubscribe a cluster name on a wildcard CDS")
	w.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesUnsubscribe: w.held(resourcev3.ClusterType)[:1]})
	w.ackAll()
	e.step("EDS wildcard on, then off")
	e.req(subscribe(resourcev3.EndpointType, "*"))
	e.ackAll()
	e.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{"*"}})
	m.moveEndpoint(a)
	pushAll(e, w, twin)

	w.step("stops answering for more than MaxUnackedResponses changes")
	for i := 0; i < MaxUnackedResponses+2; i++ {
		m.moveEndpoint(a)
		pushAll(e, twin)
		w.push()
	}
	m.w = 60
	a.Update(m.mesh(), time.Now())
	pushAll(e, twin)
	w.push()
	w.step("answers everything")
	w.ackAll()
	w.ackAll()

	// Reconnects: what each holds now, with one stale version and one
	// name that does not exist.
	initial := map[string]map[string]string{}
	for typ, m := range e.names {
		initial[typ] = map[string]string{}
		for n, v := range m {
			initial[typ][n] = v
		}
	}
	eds = e.held(resourcev3.EndpointType)
	initial[resourcev3.EndpointType][eds[0]] = "stale"
	initial[resourcev3.EndpointType]["outbound|80||gone.ns-0.svc.cluster.local"] = "0123"
	r := connect(t, a, &out, "reconnect", true, false, transcriptNode("p-3.ns-0", testmesh.Namespace(0), "svc-0"))
	r.step("reconnect with initial versions")
	for _, typ := range pushOrder[1:] {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, InitialResourceVersions: initial[typ]}
		if !isWildcardType(typ) {
			req.ResourceNamesSubscribe = append(e.held(typ), "outbound|80||gone.ns-0.svc.cluster.local")
			if typ == resourcev3.RouteType {
				req.ResourceNamesSubscribe = e.held(typ)
			}
		}
		r.req(req)
	}
	r.ackAll()
	everyone = append(everyone, r)
	r.step("a change after the reconnect")
	m.moveEndpoint(a)
	pushAll(e, w, twin, r)

	g := connect(t, a, &out, "subset", true, false, transcriptNode("p-4.ns-1", testmesh.Namespace(1), "svc-3"))
	g.step("subscribe to two clusters and their endpoints, by name, as gRPC does")
	two := []string{"outbound|80||svc-1.ns-1.svc.cluster.local", "outbound|80||svc-2.ns-0.svc.cluster.local"}
	g.req(subscribe(resourcev3.ListenerType, "outbound"))
	g.req(subscribe(resourcev3.ClusterType, two...))
	g.req(subscribe(resourcev3.EndpointType, two...))
	g.ackAll()
	everyone = append(everyone, g)
	g.step("endpoint changes, one NACKed")
	m.moveEndpoint(a)
	pushAll(e, w, twin, r, g)
	m.moveEndpoint(a)
	pushAll(e, w, twin, r)
	g.nackType(resourcev3.EndpointType)
	g.ackAll()
	g.step("subscribe a third, unsubscribe the first")
	g.req(subscribe(resourcev3.EndpointType, "outbound|80||svc-3.ns-1.svc.cluster.local"))
	g.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: two[:1]})
	g.ackAll()
	m.moveEndpoint(a)
	pushAll(e, w, twin, r, g)
	g.step("svc-5 removed, a weight change")
	m.drop5, m.w = true, 70
	a.Update(m.mesh(), time.Now())
	pushAll(e, w, twin, r, g)
	checkTranscript(t, "delta", out.String())
}

func TestTranscriptSecrets(t *testing.T) {
	var out strings.Builder
	a := NewADS(logr.Discard())
	src := &transcriptSecrets{}
	a.SetSecrets(src)
	m := tmesh{w: 10}
	a.Update(m.mesh(), time.Now())
	e := connect(t, a, &out, "envoy", true, true, transcriptNode("p-0.ns-0", testmesh.Namespace(0), "svc-0"))
	s := connect(t, a, &out, "sotw", false, true, transcriptNode("p-1.ns-1", testmesh.Namespace(1), "svc-1"))
	e.step("subscribe secrets, then the rest")
	e.req(subscribe(resourcev3.SecretType, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret))
	e.envoyLike()
	e.ackAll()
	s.step("subscribe secrets, clusters, listeners")
	for _, typ := range []string{resourcev3.SecretType, resourcev3.ClusterType, resourcev3.ListenerType} {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
		if typ == resourcev3.SecretType {
			req.ResourceNames = []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}
		}
		s.sreq(req)
	}
	sotwAck := func(d *driver, nack bool) {
		last := map[string]*discoveryv3.DiscoveryResponse{}
		for _, r := range d.s.sotw {
			last[r.TypeUrl] = r
		}
		for _, typ := range pushOrder {
			r := last[typ]
			if r == nil {
				continue
			}
			req := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResponseNonce: r.Nonce, VersionInfo: r.VersionInfo}
			if typ == resourcev3.SecretType {
				req.ResourceNames = []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}
			}
			if nack && typ == resourcev3.SecretType {
				req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: "rejected by the test"}
			}
			d.sreq(req)
		}
	}
	sotwAck(s, false)

	e.step("renewal")
	src.version = 1
	a.SecretsChanged(e.c.group.proxy.Identity(a.mesh.TrustDomain))
	a.SecretsChanged(s.c.group.proxy.Identity(a.mesh.TrustDomain))
	e.push()
	s.push()
	e.step("before the ACK")
	e.flush()
	e.ackAll()
	sotwAck(s, false)
	e.step("renewal NACKed")
	src.version = 2
	a.SecretsChanged(e.c.group.proxy.Identity(a.mesh.TrustDomain))
	a.SecretsChanged(s.c.group.proxy.Identity(a.mesh.TrustDomain))
	e.push()
	s.push()
	e.nackType(resourcev3.SecretType)
	sotwAck(s, true)
	e.step("a weight change")
	m.w = 20
	a.Update(m.mesh(), time.Now())
	e.push()
	s.push()
	e.ackAll()
	sotwAck(s, false)
	e.step("unsubscribe the bundle")
	e.req(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesUnsubscribe: []string{dataplane.TrustBundleSecret}})
	e.ackAll()
	e.step("renewal")
	src.version = 3
	a.SecretsChanged(e.c.group.proxy.Identity(a.mesh.TrustDomain))
	e.push()
	e.ackAll()
	checkTranscript(t, "secrets", out.String())
}
