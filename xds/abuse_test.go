package xds_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// abuseNode claims shop/frontend with labels of its own and, when bad,
// probes on a port that does not exist.
func abuseNode(i int, bad bool) *corev3.Node {
	probes := `{"/app-health/app/readyz":{"port":8080,"path":"/","scheme":"HTTP","timeoutSeconds":1}}`
	if bad {
		probes = `{"/app-health/app/readyz":{"port":70000,"path":"/","scheme":"HTTP","timeoutSeconds":1}}`
	}
	md, _ := structpb.NewStruct(map[string]any{
		dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: "frontend",
		dataplane.MetaLabels:    map[string]any{"app": "frontend", "n": fmt.Sprint(i)},
		dataplane.MetaAppProbes: probes,
	})
	return &corev3.Node{Id: fmt.Sprintf("abuser-%d.shop", i), Metadata: md}
}

// seriesCount counts the series of weft's xDS metrics.
func seriesCount(t *testing.T) int {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if len(mf.GetName()) > 9 && mf.GetName()[:9] == "weft_xds_" {
			n += len(mf.Metric)
		}
	}
	return n
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestAnonymousPortAbuse is issue 13's abuse test on the anonymous
// endpoint, served by xds.NewServer as weft-controller serves it: one
// connection opens 10,000 streams with unique labels and invalid probes,
// each followed by 1,000 made-up type URLs; then streams with valid
// unique labels try to hold more groups and more streams than the caps.
// Asserted: builds per update stay at the real groups', heap growth and
// metric series stay bounded, and excess streams are refused with
// ResourceExhausted.
func TestAnonymousPortAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 streams")
	}
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	// The real proxies: two authenticated groups.
	auth := serve(t, ads)
	for _, n := range []*corev3.Node{node("frontend-0.shop", "shop", "frontend"), node("ledger-0.other", "other", "ledger")} {
		dialDelta(t, auth, n, nil).settle()
	}
	realGroups := 2
	before := ads.Builds()
	ads.Update(mesh(t, 20), time.Now())
	perUpdate := ads.Builds() - before

	srv, err := xds.NewServer("127.0.0.1:0", ads.Anonymous(), nil, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Start(ctx) }()
	cc, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	seriesBefore, heapBefore := seriesCount(t), heapInUse()

	// 10,000 streams on one connection, unique labels, invalid probes; the
	// first 1,000 follow the node with 1,000 made-up type URLs each (all
	// 10,000 would take 40 s on two cores and show nothing more).
	const streams, typeURLs, flooders = 10000, 1000, 1000
	codesSeen := map[codes.Code]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range xds.MaxStreamsPerConnection {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				n := 0
				if i < flooders {
					n = typeURLs // the first 1,000 also name 1,000 types each
				}
				code := abuse(ctx, client, abuseNode(i, true), n)
				mu.Lock()
				codesSeen[code]++
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := range streams {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d streams with invalid probes (%d of them with %d made-up type URLs each): %v in %v", streams, flooders, typeURLs, codesSeen, time.Since(start).Round(time.Millisecond))
	if codesSeen[codes.InvalidArgument] != streams {
		t.Errorf("streams with invalid probes ended with %v; want all %d refused with InvalidArgument", codesSeen, streams)
	}

	// Valid nodes with 1,000 made-up type URLs: refused at the first.
	for i := range 100 {
		if code := abuse(ctx, client, abuseNode(streams+i, false), typeURLs); code != codes.InvalidArgument {
			t.Fatalf("a stream asking for made-up type URLs ended with %v, want InvalidArgument", code)
		}
	}

	// Streams held open: per connection, at most MaxStreamsPerConnection.
	held, refused := holdStreams(t, ctx, client, 20000, 3*xds.MaxStreamsPerConnection)
	if held != xds.MaxStreamsPerConnection || refused != 2*xds.MaxStreamsPerConnection {
		t.Errorf("%d streams on one connection: %d held, %d refused with ResourceExhausted; want %d held, the rest refused", 3*xds.MaxStreamsPerConnection, held, refused, xds.MaxStreamsPerConnection)
	}
	// Groups: over many connections, at most MaxAnonymousGroups.
	conns := (xds.MaxAnonymousGroups+64)/xds.MaxStreamsPerConnection + 1
	totalHeld, totalRefused := held, refused
	for i := range conns {
		cc2, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc2.Close()
		h, r := holdStreams(t, ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(cc2), 30000+i*100, xds.MaxStreamsPerConnection)
		totalHeld += h
		totalRefused += r
	}
	if totalHeld != xds.MaxAnonymousGroups {
		t.Errorf("%d anonymous streams with distinct labels held; want the cap, %d", totalHeld, xds.MaxAnonymousGroups)
	}
	t.Logf("held %d anonymous streams (one group each), refused %d with ResourceExhausted", totalHeld, totalRefused)

	// Builds per update: the abuse added no failing group; the capped
	// valid ones build only when the update concerns them.
	before = ads.Builds()
	ads.Update(mesh(t, 30), time.Now())
	abusedPerUpdate := ads.Builds() - before
	t.Logf("builds per update: %d before the abuse (real groups: %d), %d after (with %d capped anonymous groups)", perUpdate, realGroups, abusedPerUpdate, totalHeld)
	if perUpdate > uint64(realGroups) {
		t.Errorf("an update cost %d builds with %d real groups", perUpdate, realGroups)
	}
	if abusedPerUpdate > uint64(realGroups+xds.MaxAnonymousGroups) {
		t.Errorf("an update after the abuse cost %d builds; want at most %d real + %d capped anonymous groups", abusedPerUpdate, realGroups, xds.MaxAnonymousGroups)
	}
	series := seriesCount(t)
	heap := int64(heapInUse()) - int64(heapBefore)
	t.Logf("weft_xds_* series: %d before, %d after; heap in use grew by %.1f MiB", seriesBefore, series, float64(heap)/(1<<20))
	if series > seriesBefore+10 {
		t.Errorf("metric series grew from %d to %d: a client must not add series by naming types", seriesBefore, series)
	}
	const heapBound = 64 << 20
	if heap > heapBound {
		t.Errorf("heap in use grew by %d MiB with %d anonymous streams held; want under %d MiB", heap>>20, totalHeld, heapBound>>20)
	}
}

// abuse opens one stream for n, then names typeURLs made-up types; it
// returns the code the stream ended with.
func abuse(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient, n *corev3.Node, typeURLs int) codes.Code {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return grpcstatus.Code(err)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resourcev3.ClusterType}); err == nil {
		for j := 0; j < typeURLs; j++ {
			if s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.Type%d", j)}) != nil {
				break
			}
		}
	}
	for {
		if _, err := s.Recv(); err != nil {
			return grpcstatus.Code(err)
		}
	}
}

// holdStreams opens n streams with distinct valid labels and keeps the
// admitted ones open until the test ends; it counts those that got a
// response (held) and those refused with ResourceExhausted.
func holdStreams(t *testing.T, ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient, base, n int) (held, refused int) {
	t.Helper()
	type result struct {
		ok   bool
		code codes.Code
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			s, err := client.DeltaAggregatedResources(ctx)
			if err != nil {
				results <- result{code: grpcstatus.Code(err)}
				return
			}
			if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: abuseNode(base+i, false), TypeUrl: resourcev3.ClusterType}); err != nil {
				_, err = s.Recv()
				results <- result{code: grpcstatus.Code(err)}
				return
			}
			if _, err := s.Recv(); err != nil {
				results <- result{code: grpcstatus.Code(err)}
				return
			}
			results <- result{ok: true}
			for { // hold it, never ACK
				if _, err := s.Recv(); err != nil {
					return
				}
			}
		}()
	}
	for range n {
		select {
		case r := <-results:
			switch {
			case r.ok:
				held++
			case r.code == codes.ResourceExhausted:
				refused++
			default:
				t.Errorf("a stream ended with %v, want a response or ResourceExhausted", r.code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a stream neither got a response nor was refused")
		}
	}
	return held, refused
}

// TestNeverAckingProxyIsBounded: a proxy that never answers is sent at
// most MaxUnackedResponses responses per type however many updates come
// (issue 13: pending grew by one per push); its first answer brings the
// newest state.
func TestNeverAckingProxyIsBounded(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(mesh(t, 1), time.Now())
	cc, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("frontend-0.shop", "shop", "frontend"), TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{"outbound|80||checkout.shop.svc.cluster.local"}}); err != nil {
		t.Fatal(err)
	}
	resps := make(chan *discoveryv3.DeltaDiscoveryResponse, 1000)
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				close(resps)
				return
			}
			resps <- r
		}
	}()
	const updates = 40
	for w := 2; w < 2+updates; w++ {
		ads.Update(mesh(t, w), time.Now())
		time.Sleep(5 * time.Millisecond)
	}
	var got []*discoveryv3.DeltaDiscoveryResponse
	for quiet := false; !quiet; {
		select {
		case r := <-resps:
			got = append(got, r)
		case <-time.After(500 * time.Millisecond):
			quiet = true
		}
	}
	t.Logf("%d updates to a proxy that never answers: %d route responses sent", updates, len(got))
	if len(got) > xds.MaxUnackedResponses {
		t.Fatalf("%d responses sent to a proxy that answered none; want at most %d (xds.MaxUnackedResponses)", len(got), xds.MaxUnackedResponses)
	}
	// One answer: the newest state follows.
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.RouteType, ResponseNonce: got[len(got)-1].Nonce}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-resps:
		if len(r.Resources) != 1 {
			t.Fatalf("after the answer, got %d resources", len(r.Resources))
		}
		var rc routev3.RouteConfiguration
		if err := r.Resources[0].Resource.UnmarshalTo(&rc); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("weight:{value:%d}", 1+updates); !strings.Contains(strings.ReplaceAll(rc.String(), " ", ""), want) {
			t.Errorf("after the answer the proxy was sent a route without the newest weight (%s): %v", want, &rc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy's answer did not bring the newest state")
	}
}

// TestSilentStreamIsClosed: a stream that never sends its first request
// does not hold its slot past FirstRequestTimeout.
func TestSilentStreamIsClosed(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	xds.SetFirstRequestTimeout(ads, 200*time.Millisecond)
	cc, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := time.Now()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if grpcstatus.Code(err) != codes.DeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Fatalf("a silent stream ended with %v after %v; want DeadlineExceeded after the first-request timeout", err, time.Since(start))
	}
}

// TestLargeDeltaPushIsSplit: issue 13 — each type was sent as one
// response, and Envoy's Google gRPC client refuses messages over 4 MiB.
// A push larger than the chunk size arrives as several responses, each
// within it, together the whole type; the policy counts as programmed
// only once every part is ACKed.
func TestLargeDeltaPushIsSplit(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	const chunk = 600 // bytes: smaller than the shop mesh's clusters together
	xds.SetResponseChunkBytes(ads, chunk)
	ads.Update(mesh(t, 10), time.Now())
	cc, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("frontend-0.shop", "shop", "frontend"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	var parts []*discoveryv3.DeltaDiscoveryResponse
	names := map[string]bool{}
	for quiet := false; !quiet; {
		r := make(chan *discoveryv3.DeltaDiscoveryResponse, 1)
		go func() {
			m, err := s.Recv()
			if err == nil {
				r <- m
			}
		}()
		select {
		case m := <-r:
			parts = append(parts, m)
		case <-time.After(time.Second):
			quiet = true
		}
	}
	total := 0
	for _, p := range parts {
		size := 0
		for _, res := range p.Resources {
			size += proto.Size(res)
			names[res.Name] = true
		}
		total += size
		if size > chunk && len(p.Resources) > 1 {
			t.Errorf("a response carries %d bytes in %d resources; want at most %d (or one resource)", size, len(p.Resources), chunk)
		}
	}
	t.Logf("%d clusters (%d bytes) in %d responses of at most %d bytes", len(names), total, len(parts), chunk)
	if len(parts) < 2 {
		t.Fatalf("%d bytes of clusters came in %d response; want them split at %d bytes", total, len(parts), chunk)
	}
	ref := func() xds.PolicyState {
		return ads.PolicyState(ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 10})
	}
	// ACK all but the last part: not programmed; then the last.
	for _, p := range parts[:len(parts)-1] {
		if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: p.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if st := ref(); st.Programmed() {
		t.Fatalf("programmed (%+v) with one part of the push unanswered", st)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: parts[len(parts)-1].Nonce}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !ref().Programmed() {
		if time.Now().After(deadline) {
			t.Fatalf("not programmed after every part was ACKed: %+v", ref())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
