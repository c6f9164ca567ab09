package xds_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// BenchmarkColdStart is hack/bench's cold start (issue 14) in process:
// 2,000 Services × 10 endpoints in 10 namespaces, every Service visible to
// every proxy, 200 TrafficSplits; 100 simulated Delta sidecars, each its
// own workload (its own group, with its pod's address), open their streams
// at once while the model changes: each time another quarter of the
// groups has been built the ADS is given a new model generation equal in
// content (a re-translation kept through ir.Reuse, as the controller
// installs after an event that changes nothing the proxies see);
// models=1 is the cold start alone. The proxies subscribe as Envoy (and
// hack/bench's) do: clusters and listeners by wildcard, endpoints and
// route configurations by the names those give, so a stream's
// subscription and bookkeeping of named types are part of what is
// measured. large is issue 14's large profile's mesh (5,000 Services),
// whose clusters and listeners each take two responses
// (ResponseChunkBytes), so the proxies subscribe to endpoints and routes
// in two steps, as in a large cold start. One iteration is the whole cold
// start, from a new ADS to every proxy holding every Service. Measure it
// by CPU profile and allocations, not time (the machine is shared):
//
//	go test ./xds -run '^$' -bench ColdStart -benchmem -count 3 -cpuprofile cpu.out
func BenchmarkColdStart(b *testing.B) {
	for _, models := range []int{1, 4} {
		b.Run(fmt.Sprintf("models=%d", models), func(b *testing.B) { coldStart(b, 2000, models) })
	}
	b.Run("large", func(b *testing.B) { coldStart(b, 5000, 1) })
}

// coldStart is BenchmarkColdStart of a mesh of services with generations
// models installed during the cold start, the first included.
func coldStart(b *testing.B, services, generations int) {
	const namespaces, proxies = 10, 100
	in := testmesh.Generate(testmesh.Options{Services: services, Namespaces: namespaces, EndpointsPerService: 10, ExportAll: true, SplitEvery: 10})
	var builds uint64
	for b.Loop() {
		b.StopTimer()
		mesh := translator.Translate(in).Mesh
		ads := xds.NewADS(logr.Discard())
		ads.Update(mesh, time.Now())
		addr := serve(b, ads)
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		// Every stream at once, as hack/bench opens them; a new model
		// generation each time another quarter of the groups was built.
		var all []*xdsload.Proxy
		var conns []*grpc.ClientConn
		done := make(chan struct{})
		go func() {
			defer close(done)
			for g := 1; g < generations; g++ {
				for ads.Builds() < uint64(1+g*proxies/generations) && ctx.Err() == nil {
					time.Sleep(time.Millisecond)
				}
				mesh = ir.Reuse(mesh, translator.Translate(in).Mesh)
				ads.Update(mesh, time.Now())
			}
		}()
		for i := range proxies {
			ns := testmesh.Namespace(i % namespaces)
			app := fmt.Sprintf("svc-%d", i)
			md, _ := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{Namespace: ns, ServiceAccount: app,
				Labels: map[string]string{"app": app}, PodIPs: testmesh.PodIP(i, 0), Kind: dataplane.KindNameSidecar}))
			p := &xdsload.Proxy{Node: &corev3.Node{Id: fmt.Sprintf("%s-0.%s", app, ns), Metadata: md}, ByName: true}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, conn)
			go func() { _ = p.Run(ctx, conn) }()
			all = append(all, p)
		}
		<-done
		holdAll(b, all, services)
		b.StopTimer()
		builds += ads.Builds()
		cancel()
		for _, c := range conns {
			c.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(builds)/float64(b.N), "builds/op")
}

// holdAll waits until every proxy holds every Service it sees (converge
// without its pause).
func holdAll(b testing.TB, ps []*xdsload.Proxy, services int) {
	waitAll(b, ps, func(_ *xdsload.Proxy, v map[string]map[string]string) bool {
		return len(v[resourcev3.EndpointType]) >= services && len(v[resourcev3.ClusterType]) >= services && len(v[resourcev3.ListenerType]) > 0
	}, "80")
}
