package xds

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"
	"weak"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// Groups that see the same Service hold one encoding of its endpoints and
// clusters; secrets are never shared or cached; an encoding no snapshot
// holds any more leaves the cache.
func TestEncodingsAreSharedAcrossGroups(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 20, Namespaces: 2, EndpointsPerService: 3})).Mesh
	enc := newEncoder()
	// Two identities in ns-0, one in ns-1.
	a := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "a", Labels: map[string]string{"app": "svc-0"}}
	b := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "b", Labels: map[string]string{"app": "svc-2"}}
	c := dataplane.Proxy{Namespace: "ns-1", ServiceAccount: "c", Labels: map[string]string{"app": "svc-1"}}
	secret := func(id string) []byte { return []byte("key of " + id) }
	build := func(p dataplane.Proxy) *snapshot {
		s, _, err := buildSnapshot(mesh, p, sdsSecrets(secret(p.ServiceAccount), secret(p.ServiceAccount), []byte("bundle")), nil, enc)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sa, sb, sc := build(a), build(b), build(c)

	eds := "outbound|80||svc-4.ns-0.svc.cluster.local"
	if sa.resources[endpointsAt][eds] == nil || sa.resources[endpointsAt][eds] != sb.resources[endpointsAt][eds] {
		t.Errorf("two groups of ns-0 do not share the encoding of %s", eds)
	}
	if sa.resources[clustersAt][eds] != sb.resources[clustersAt][eds] {
		t.Errorf("two groups of ns-0 do not share the cluster %s", eds)
	}
	if sa.resources[secretsAt][dataplane.WorkloadCertSecret] == sb.resources[secretsAt][dataplane.WorkloadCertSecret] {
		t.Error("two identities share a secret's encoding")
	}
	enc.mu.Lock()
	for typ, byHash := range enc.entries {
		if typ == resourcev3.SecretType && len(byHash) > 0 {
			t.Errorf("a secret is in the shared cache")
		}
	}
	enc.mu.Unlock()
	if _, ok := sc.resources[endpointsAt][eds]; ok {
		t.Errorf("ns-1's group sees %s", eds)
	}
	shared := enc.size()

	// Drop ns-0's snapshots: the encodings only they held go.
	sa, sb = nil, nil // the only references
	deadline := time.Now().Add(30 * time.Second)
	for enc.size() >= shared && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if enc.size() >= shared {
		t.Errorf("the cache still holds %d encodings after the snapshots that held them were dropped (had %d)", enc.size(), shared)
	}
	// What ns-1's snapshot holds stays, and is reused.
	again := build(c)
	if again.resources[endpointsAt]["outbound|80||svc-1.ns-1.svc.cluster.local"] != sc.resources[endpointsAt]["outbound|80||svc-1.ns-1.svc.cluster.local"] {
		t.Error("a rebuild did not reuse the encoding its own snapshot holds")
	}
	runtime.KeepAlive(sc)
}

// Equal hashes are not enough: an entry under the same key whose bytes
// differ (a hash collision) is never handed out.
func TestEncoderComparesBytes(t *testing.T) {
	enc := newEncoder()
	m := &endpointv3.ClusterLoadAssignment{ClusterName: "x"}
	b, _ := marshal.Marshal(m)
	h := fnv.New64a()
	_, _ = h.Write(b)
	impostor := newEncoded(resourcev3.EndpointType, "x", "impostor", []byte("other content"))
	enc.entries[resourcev3.EndpointType] = map[uint64]weak.Pointer[encoded]{h.Sum64(): weak.Make(impostor)}
	got, err := enc.encode(resourcev3.EndpointType, "x", m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got == impostor || string(got.value()) != string(b) {
		t.Errorf("encode returned an entry with other bytes under the same hash")
	}
	// Same bytes and hash under another name: not the same resource.
	other := newEncoded(resourcev3.EndpointType, "y", "other", b)
	enc.entries[resourcev3.EndpointType][h.Sum64()] = weak.Make(other)
	if got, err := enc.encodeContent(nil, resourcev3.EndpointType, "x", m, nil); err != nil || got == other {
		t.Errorf("encode returned another name's entry with the same bytes (%v)", err)
	}
	runtime.KeepAlive(impostor)
	runtime.KeepAlive(other)
}

// TestEncoderEntriesStayBounded: entries of collected encodings are swept
// as the map grows, so a controller that encodes new content for hours
// holds entries for what lives (twice that at most, or minSweep), and
// what lives is still found.
func TestEncoderEntriesStayBounded(t *testing.T) {
	enc := newEncoder()
	const perRound = 3000
	var kept []*encoded
	for round := range 20 {
		for i := range perRound {
			name := fmt.Sprintf("r%d-%d", round, i)
			x, err := enc.encodeContent(nil, resourcev3.EndpointType, name, &endpointv3.ClusterLoadAssignment{ClusterName: name}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if round == 0 && i < 100 {
				kept = append(kept, x)
			}
		}
		runtime.GC()
	}
	enc.mu.Lock()
	n := len(enc.entries[resourcev3.EndpointType])
	enc.mu.Unlock()
	if limit := 2*(len(kept)+perRound) + minSweep; n > limit {
		t.Errorf("after 20 rounds of %d encodings, each dropped, the encoder holds %d entries; want at most %d", perRound, n, limit)
	}
	for _, x := range kept {
		if got, _ := enc.encodeContent(nil, resourcev3.EndpointType, x.name(), &endpointv3.ClusterLoadAssignment{ClusterName: x.name()}, nil); got != x {
			t.Fatalf("%s: a live encoding was not found again", x.name())
		}
	}
	if got := enc.size(); got != len(kept) {
		t.Errorf("size %d after the others were collected; want the %d kept", got, len(kept))
	}
}

// A Service port's endpoints are one message for every group that sees
// them (translator/envoy builds them once per *ir.Port), and the encoder
// marshals that message once: a second group, or a rebuild, marshals no
// endpoints; an endpoint change marshals only the changed Service's.
func TestSharedEndpointsAreMarshalledOnce(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 20, Namespaces: 2, EndpointsPerService: 3})).Mesh
	enc := newEncoder()
	a := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "a", Labels: map[string]string{"app": "svc-0"}}
	b := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "b", Labels: map[string]string{"app": "svc-2"}}
	build := func(m *ir.Mesh, p dataplane.Proxy, prev *snapshot) (*snapshot, uint64) {
		before := enc.endpointMarshals.Load()
		s, _, err := buildSnapshot(m, p, nil, prev, enc)
		if err != nil {
			t.Fatal(err)
		}
		return s, enc.endpointMarshals.Load() - before
	}
	sa, n := build(mesh, a, nil)
	eds := len(sa.resources[endpointsAt])
	if eds == 0 || n != uint64(eds) {
		t.Fatalf("the first group marshalled %d endpoint messages for its %d", n, eds)
	}
	sb, n := build(mesh, b, nil)
	if n != 0 {
		t.Errorf("a second group of the namespace marshalled %d endpoint messages, want 0", n)
	}
	for name, e := range sb.resources[endpointsAt] {
		if sa.resources[endpointsAt][name] != e {
			t.Errorf("the groups do not share the encoding of %s", name)
		}
	}
	if _, n := build(mesh, a, sa); n != 0 {
		t.Errorf("a rebuild from the same mesh marshalled %d endpoint messages, want 0", n)
	}

	// One Service's endpoints change (translator.UpdateEndpoints keeps
	// every other Service's ports): only its message is new.
	key := ir.ServiceKey{Namespace: "ns-0", Name: "svc-4"}
	changed := *mesh
	changed.Services = append([]*ir.Service(nil), mesh.Services...)
	for i, svc := range changed.Services {
		if svc.Key == key {
			cp := *svc
			port := *svc.Ports[0]
			port.Endpoints = port.Endpoints[:1]
			cp.Ports = append([]*ir.Port{&port}, svc.Ports[1:]...)
			changed.Services[i] = &cp
		}
	}
	next, n := build(&changed, a, sa)
	name := ir.ClusterName(key, 80)
	if n != 1 || next.resources[endpointsAt][name] == sa.resources[endpointsAt][name] {
		t.Errorf("after one Service's endpoints changed: %d endpoint messages marshalled (want 1), %s changed: %t", n, name,
			next.resources[endpointsAt][name] != sa.resources[endpointsAt][name])
	}
}

// TestShrinkMapsAfterPeak: a map emptied to a quarter of its peak is
// copied (a Go map keeps the slots it grew), with every entry kept, and its
// peak restarts at what it holds; small maps and maps still above a
// quarter are left alone.
func TestShrinkMapsAfterPeak(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range 1000 {
		m[i] = i
		peak = max(peak, len(m))
	}
	for i := range 700 {
		delete(m, i)
		if n := shrink(m, &peak); len(n) != len(m) {
			t.Fatalf("shrink dropped entries")
		}
	}
	if got := shrink(m, &peak); peak != 1000 || got == nil {
		t.Fatalf("300 of a peak of 1000 left: peak %d, want it kept", peak)
	}
	for i := 700; i < 749; i++ {
		delete(m, i)
	}
	if shrink(m, &peak); peak != 1000 {
		t.Fatalf("251 of a peak of 1000 left: peak %d, want it kept", peak)
	}
	delete(m, 749)
	n := shrink(m, &peak)
	if peak != 250 || len(n) != 250 {
		t.Fatalf("250 of a peak of 1000: peak %d, len %d, want 250 both", peak, len(n))
	}
	for i := 750; i < 1000; i++ {
		if n[i] != i {
			t.Fatalf("entry %d lost", i)
		}
	}
	small := map[int]int{1: 1}
	smallPeak := 100
	if shrink(small, &smallPeak); smallPeak != 100 {
		t.Fatalf("a map whose peak is under 256 was copied")
	}
}

// Groups that build at once (a cold start) reach the same shared message
// together: it is marshalled (and validated) once, and every one of them
// gets that encoding — also a caller whose previous encoding has the same
// content, which keeps its own.
func TestConcurrentEncodingsOfOneMessageAreOne(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 400, Namespaces: 4, EndpointsPerService: 3, ExportAll: true})).Mesh
	res := envoy.Build(mesh, dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "a", Labels: map[string]string{"app": "svc-0"}})
	var l *listenerv3.Listener
	for _, x := range res.Listeners {
		if l == nil || proto.Size(x) > proto.Size(l) {
			l = x // the outbound listener, the largest
		}
	}
	// A previous encoding of the same content, from another message.
	prev, err := newEncoder().encode(resourcev3.ListenerType, l.Name, proto.Clone(l), nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := newEncoder()
	const n = 16
	got := make([]*encoded, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			var p *encoded
			if i == 0 {
				p = prev
			}
			x, err := enc.encode(resourcev3.ListenerType, l.Name, l, p)
			if err != nil {
				t.Error(err)
			}
			got[i] = x
		}()
	}
	start.Done()
	done.Wait()
	if m := enc.msgMarshals.Load(); m != 1 {
		t.Errorf("%d concurrent encodings of one message marshalled it %d times, want 1", n, m)
	}
	if got[0] != prev {
		t.Error("the caller whose previous encoding has the same content did not keep it")
	}
	for i := 2; i < n; i++ {
		if got[i] != got[1] {
			t.Fatalf("encoding %d differs from encoding 1", i)
		}
	}
	if !bytes.Equal(got[1].value(), prev.value()) {
		t.Error("the shared encoding's bytes differ from the message's")
	}
}

// testEncoding is an encoding of an empty cluster called name, at version
// (tests that look at names and versions only).
func testEncoding(name, version string) *encoded {
	return newEncoded(resourcev3.ClusterType, name, version, nil)
}

// TestEncodingIsSmall: an encoding is held once per distinct content (8,013
// of them in issue 14's mesh at 100 proxies): its struct stays at 40 bytes
// (docs/design/194, 200). Its wire form ends with its type URL, and reads
// back as the resource it is.
func TestEncodingIsSmall(t *testing.T) {
	if n := unsafe.Sizeof(encoded{}); n > 40 {
		t.Errorf("an encoding's struct is %d bytes, want at most 40", n)
	}
	big := bytes.Repeat([]byte{0x0a, 0x03, 'a', 'b', 'c'}, 200)
	small := []byte{0x0a, 0x01, 'x'}
	a := newEncoded(resourcev3.ClusterType, "a", "1", big)
	b := newEncoded(resourcev3.ClusterType, "b", "2", big)
	c := newEncoded(resourcev3.ClusterType, "c", "3", small)
	for _, x := range []*encoded{a, b, c} {
		if !bytes.HasSuffix(x.wire, []byte(resourcev3.ClusterType)) {
			t.Errorf("%s: the wire form does not end with its type URL", x.name())
		}
	}
	for _, x := range []struct {
		e                    *encoded
		name, version, value string
	}{{a, "a", "1", string(big)}, {c, "c", "3", string(small)}} {
		r := &discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{x.e.resource(resourcev3.ClusterType)}}
		if got, want := x.e.deltaSize(resourcev3.ClusterType), proto.Size(r); got != want {
			t.Errorf("%s: wire form and type URL are %d bytes, the resource as proto writes it %d", x.name, got, want)
		}
		if x.e.name() != x.name || x.e.version() != x.version || string(x.e.value()) != x.value {
			t.Errorf("%s: read back name %q, version %q, value %x", x.name, x.e.name(), x.e.version(), x.e.value())
		}
	}
}
