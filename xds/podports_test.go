package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// A sidecar's readiness and stats listeners are bound to its own pod's
// addresses (docs/design/183), yet replicas of a workload share one group
// build: each stream serves its own two listeners beside the group's.

// nodeAt is node with the pod's addresses (INSTANCE_IPS).
func nodeAt(id, ns, sa, ips string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{
		dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: sa,
		dataplane.MetaLabels: map[string]any{"app": sa}, dataplane.MetaPodIPs: ips,
	})
	return &corev3.Node{Id: id, Metadata: md}
}

// meshWithServices is mesh(t, w) with n more TCP Services in shop, each a
// filter chain of the outbound listener: a push that changes the group's
// listeners.
func meshWithServices(t *testing.T, w, n int) *ir.Mesh {
	t.Helper()
	doc := fmt.Sprintf(shopYAML, 100-w, w)
	for i := 0; i < n; i++ {
		doc += fmt.Sprintf(`
---
apiVersion: v1
kind: Service
metadata: {name: db-%d, namespace: shop}
spec: {clusterIP: 10.0.0.%d, selector: {app: db-%d}, ports: [{name: pg, port: 5432, appProtocol: tcp}]}`, i, 100+i, i)
	}
	in, err := translator.DecodeInputs([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return translator.Translate(in).Mesh
}

// boundTo says which addresses a listener binds, its address first.
func boundTo(t *testing.T, a *anypb.Any) (string, []string, bool) {
	t.Helper()
	var l listenerv3.Listener
	if err := a.UnmarshalTo(&l); err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, aa := range l.GetAdditionalAddresses() {
		extra = append(extra, aa.GetAddress().GetSocketAddress().GetAddress())
	}
	return l.GetAddress().GetSocketAddress().GetAddress(), extra, l.GetFreebind().GetValue()
}

// checkOwn asserts that listeners (name → resource) hold readiness and
// stats bound to ip and loopback.
func checkOwn(t *testing.T, who, ip string, listeners map[string]*anypb.Any) {
	t.Helper()
	for _, name := range []string{dataplane.ReadinessListener, dataplane.StatsListener} {
		a := listeners[name]
		if a == nil {
			t.Errorf("%s: no %s listener", who, name)
			continue
		}
		addr, extra, freebind := boundTo(t, a)
		if addr != ip || len(extra) != 1 || extra[0] != "127.0.0.1" || !freebind {
			t.Errorf("%s: %s binds %s + %v (freebind %v); want %s + [127.0.0.1], freebind", who, name, addr, extra, freebind, ip)
		}
	}
	if listeners[dataplane.InboundListener] == nil || listeners[dataplane.OutboundListener] == nil {
		t.Errorf("%s: the group's listeners are missing: %v", who, len(listeners))
	}
}

func TestProxyListenersPerStreamDelta(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(meshWithServices(t, 10, 0), time.Now())
	addr := serve(t, ads)
	before := ads.Builds()
	ips := []string{"10.1.0.5", "10.1.0.6"}
	var cs []*deltaClient
	for i, ip := range ips {
		c := dialDelta(t, addr, nodeAt(fmt.Sprintf("frontend-%d.shop", i), "shop", "frontend", ip), nil)
		c.settle()
		cs = append(cs, c)
	}
	if got := ads.Builds() - before; got != 1 {
		t.Errorf("two replicas of one group cost %d builds; want 1 (the group's configuration is shared)", got)
	}
	for i, c := range cs {
		got := map[string]*anypb.Any{}
		for _, r := range c.lds {
			for _, res := range r.Resources {
				got[res.Name] = res.Resource
			}
		}
		checkOwn(t, fmt.Sprintf("replica %d", i), ips[i], got)
		if len(c.lds) == 0 {
			t.Fatalf("replica %d: no listener response", i)
		}
		first := map[string]bool{}
		for _, res := range c.lds[0].Resources {
			first[res.Name] = true
		}
		for _, name := range []string{dataplane.InboundListener, dataplane.OutboundListener, dataplane.ReadinessListener, dataplane.StatsListener} {
			if !first[name] {
				t.Errorf("replica %d: the first listener response lacks %s: %v", i, name, first)
			}
		}
		c.lds = nil
	}

	// A push that changes the group's listeners (a new TCP Service: its
	// own listener, docs/design/182): sent, made once (a build or, for a
	// new Service, a patch: docs/design/186), and neither re-sends nor
	// removes the replicas' own listeners.
	before = ads.Builds() + ads.Patches()
	ads.Update(meshWithServices(t, 10, 1), time.Now())
	for _, c := range cs {
		c.settle()
	}
	if got := ads.Builds() + ads.Patches() - before; got != 1 {
		t.Errorf("the change cost %d builds and patches for one group of two replicas; want 1", got)
	}
	for i, c := range cs {
		if len(c.lds) == 0 {
			t.Fatalf("replica %d: no listener push for a new TCP Service (the test needs one)", i)
		}
		for _, r := range c.lds {
			for _, res := range r.Resources {
				if envoy.IsProxyListener(res.Name) {
					t.Errorf("replica %d: the push re-sent listener %s", i, res.Name)
				}
			}
			if len(r.RemovedResources) > 0 {
				t.Errorf("replica %d: the push removed %v", i, r.RemovedResources)
			}
		}
		if c.have[resourcev3.ListenerType][dataplane.ReadinessListener] == "" || c.have[resourcev3.ListenerType][dataplane.StatsListener] == "" {
			t.Errorf("replica %d holds %v", i, c.have[resourcev3.ListenerType])
		}
		c.lds = nil
	}

	// A rejected listener push (db-1's new listener) holds the policies
	// back; the next one, accepted, programs them on both replicas. It
	// removes db-1 again: a rejected resource stands until the proxy
	// accepts it or its removal (an unchanged one is never re-sent).
	cs[0].nackTyp = resourcev3.ListenerType
	ads.Update(meshWithServices(t, 40, 2), time.Now())
	for _, c := range cs {
		c.settle()
	}
	ref := func(gen int64) ir.PolicyRef {
		return ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: gen}
	}
	if st := ads.PolicyState(ref(40)); st.Affected != 2 || st.Rejected != 1 || st.Programmed() {
		t.Errorf("after one replica's NACK: %+v; want 2 affected, 1 rejected, not programmed", st)
	}
	cs[0].nackTyp = ""
	ads.Update(meshWithServices(t, 50, 1), time.Now())
	for _, c := range cs {
		c.settle()
	}
	if st := ads.PolicyState(ref(50)); st.Affected != 2 || st.Acked != 2 || !st.Programmed() {
		t.Errorf("after both replicas ACKed: %+v; want programmed on 2", st)
	}
	for _, p := range ads.Proxies() {
		if s := p.Types["Listener"].State; s != xds.Synced {
			t.Errorf("proxy %s: listeners %s, want SYNCED", p.ID, s)
		}
	}

	// The debug endpoint dumps what each replica was served.
	dbg := httptest.NewServer(ads.DebugHandler())
	defer dbg.Close()
	for i, ip := range ips {
		resp, err := http.Get(fmt.Sprintf("%s/debug/config_dump?proxy=frontend-%d.shop", dbg.URL, i))
		if err != nil {
			t.Fatal(err)
		}
		var dump map[string][]json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&dump)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*anypb.Any{}
		for _, raw := range dump["Listener"] {
			a := &anypb.Any{}
			if err := protojson.Unmarshal(raw, a); err != nil {
				t.Fatal(err)
			}
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			got[l.Name] = a
		}
		checkOwn(t, fmt.Sprintf("config_dump of replica %d", i), ip, got)
	}
}

// sotwClient is a State-of-the-World stream that subscribes to every
// listener, as Envoy does, and answers each response.
type sotwClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discoveryv3.DiscoveryResponse
	nack   bool
}

func dialSotWListeners(t *testing.T, addr string, n *corev3.Node) *sotwClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st, resps: make(chan *discoveryv3.DiscoveryResponse, 100)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.resps <- r
		}
	}()
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	return c
}

// next answers one listener response and returns its listeners by name.
func (c *sotwClient) next() map[string]*anypb.Any {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}
		if c.nack {
			ack.VersionInfo = ""
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: "test rejects this"}
		}
		if err := c.stream.Send(ack); err != nil {
			c.t.Fatal(err)
		}
		out := map[string]*anypb.Any{}
		for _, a := range r.Resources {
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				c.t.Fatal(err)
			}
			out[l.Name] = a
		}
		return out
	case <-time.After(30 * time.Second):
		c.t.Fatal("no response")
	}
	return nil
}

// quiet says that no response arrives for a moment.
func (c *sotwClient) quiet() bool {
	select {
	case r := <-c.resps:
		c.resps <- r
		return false
	case <-time.After(500 * time.Millisecond):
		return true
	}
}

func TestProxyListenersPerStreamSotW(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(meshWithServices(t, 10, 0), time.Now())
	addr := serve(t, ads)
	before := ads.Builds()
	ips := []string{"10.1.0.5", "fd00:1::6"}
	var cs []*sotwClient
	var base []int // listeners in each replica's first state
	for i, ip := range ips {
		c := dialSotWListeners(t, addr, nodeAt(fmt.Sprintf("frontend-%d.shop", i), "shop", "frontend", ip))
		got := c.next()
		base = append(base, len(got))
		if i == 1 {
			// An IPv6-only pod: ::1 too.
			for _, name := range []string{dataplane.ReadinessListener, dataplane.StatsListener} {
				if a, extra, _ := boundTo(t, got[name]); a != ip || len(extra) != 2 || extra[0] != "127.0.0.1" || extra[1] != "::1" {
					t.Errorf("replica 1: %s binds %s + %v; want %s + [127.0.0.1 ::1]", name, a, extra, ip)
				}
			}
		} else {
			checkOwn(t, "replica 0", ip, got)
		}
		cs = append(cs, c)
	}
	if got := ads.Builds() - before; got != 1 {
		// The families differ, but the group key has no addresses: the
		// first member's build serves the group (as before).
		t.Errorf("two replicas of one group cost %d builds; want 1", got)
	}
	for i, c := range cs {
		if !c.quiet() {
			t.Errorf("replica %d: a response after its ACK", i)
		}
	}

	// A push that changes the group's listeners: the whole state again,
	// with each replica's own listeners.
	before = ads.Builds() + ads.Patches()
	ads.Update(meshWithServices(t, 10, 1), time.Now())
	for i, c := range cs {
		got := c.next()
		// The first state and db-0's own listener (docs/design/182).
		if got[dataplane.ReadinessListener] == nil || got[dataplane.StatsListener] == nil || got[dataplane.OutboundListener] == nil || len(got) != base[i]+1 {
			t.Fatalf("replica %d: the push carried %d listeners (%v), want %d with its own", i, len(got), keys(got), base[i]+1)
		}
		if a, _, _ := boundTo(t, got[dataplane.StatsListener]); a != ips[i] {
			t.Errorf("replica %d: stats bound to %s, want %s", i, a, ips[i])
		}
	}
	if got := ads.Builds() + ads.Patches() - before; got != 1 {
		t.Errorf("the change cost %d builds and patches; want 1", got)
	}

	// NACK, then ACK: programmed on both.
	cs[0].nack = true
	ads.Update(meshWithServices(t, 40, 2), time.Now())
	for _, c := range cs {
		c.next()
	}
	ref := func(gen int64) ir.PolicyRef {
		return ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: gen}
	}
	eventually(t, func() bool {
		st := ads.PolicyState(ref(40))
		return st.Affected == 2 && st.Rejected == 1 && !st.Programmed()
	}, "one replica's NACK holds the policy back")
	if !cs[0].quiet() {
		t.Error("the NACK was answered")
	}
	cs[0].nack = false
	ads.Update(meshWithServices(t, 50, 3), time.Now())
	for i, c := range cs {
		if got := c.next(); len(got) != base[i]+3 || got[dataplane.ReadinessListener] == nil || got[dataplane.StatsListener] == nil {
			t.Errorf("a push carried %d listeners (%v), want %d with its own", len(got), keys(got), base[i]+3)
		}
	}
	eventually(t, func() bool {
		st := ads.PolicyState(ref(50))
		return st.Affected == 2 && st.Acked == 2 && st.Programmed()
	}, "both replicas ACKed: programmed")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
