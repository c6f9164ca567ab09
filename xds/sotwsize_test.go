package xds_test

import (
	"context"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// TestSotWEndpointsOverFourMiB (issue 13, item 7): a State-of-the-World
// proxy that sees 5,000 Services of 32 endpoints is owed about 5 MiB of
// ClusterLoadAssignments (a meshed endpoint is ~36 bytes: its address and
// health; docs/design/192). Sent as one message (as before), a client with
// gRPC's default 4 MiB receive limit — gRPC-Go's, which this client is —
// refused it ("received message larger than max"), reconnected, and was
// sent it again, forever. EDS and RDS are now split like Delta pushes
// (ResponseChunkBytes); listeners and clusters, which the protocol
// requires whole, are 3.6 MiB here (5,000 clusters: about 6,000 fit in
// 4 MiB). The client subscribes as a SotW Envoy does: wildcard CDS, then
// EDS by the names the clusters give, ACKing every response; the proxy
// must end SYNCED with every assignment.
func TestSotWEndpointsOverFourMiB(t *testing.T) {
	const services = 5000
	in := testmesh.Generate(testmesh.Options{Services: services, Namespaces: 10, EndpointsPerService: 32, ExportAll: true})
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(in).Mesh, time.Now())
	srv, err := xds.NewServer("127.0.0.1:0", ads, nil, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() { cancel(); <-done }()
	// gRPC-Go's default receive limit: 4 MiB (not raised).
	cc, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node("svc-0-0.ns-0", "ns-0", "svc-0"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	recv := func() *discoveryv3.DiscoveryResponse {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("receiving: %v", err)
		}
		return r
	}
	cds := recv()
	var eds []string
	for _, a := range cds.Resources {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = c.Name
			}
			eds = append(eds, name)
		}
	}
	t.Logf("CDS: %d clusters in one response of %d bytes", len(cds.Resources), proto.Size(cds))
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: cds.VersionInfo, ResponseNonce: cds.Nonce}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	parts, total, largest := 0, 0, 0
	for len(got) < len(eds) {
		r := recv()
		if r.TypeUrl != resourcev3.EndpointType {
			t.Fatalf("got a %s response while waiting for endpoints", r.TypeUrl)
		}
		parts++
		size := proto.Size(r)
		total, largest = total+size, max(largest, size)
		for _, a := range r.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			got[cla.ClusterName] = true
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("EDS: %d assignments, %d bytes in %d responses (largest %d bytes)", len(got), total, parts, largest)
	if total <= 4<<20 || parts < 2 {
		t.Fatalf("EDS was %d bytes in %d responses; the test needs more than 4 MiB, split", total, parts)
	}
	// The proxy's answers reach the server: every type SYNCED.
	deadline := time.Now().Add(time.Minute)
	for {
		ps := ads.Proxies()
		synced := len(ps) == 1
		for _, p := range ps {
			for typ, ts := range p.Types {
				if ts.State != xds.Synced {
					synced = false
					if time.Now().After(deadline) {
						t.Fatalf("%s: %+v, want SYNCED", typ, ts)
					}
				}
			}
		}
		if synced {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSotWSplitPartRejected: when one part of a split SotW response is
// NACKed and the next ACKed, the rejection stands (the proxy does not
// hold that part's resources): the type is not SYNCED and the NACK is
// reported, until a later push of those resources is accepted.
func TestSotWSplitPartRejected(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	xds.SetResponseChunkBytes(ads, 200)
	ads.Update(mesh(t, 10), time.Now())
	cc, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node("web-0.shop", "shop", "web"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	cds, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var eds []string
	for _, a := range cds.Resources {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			eds = append(eds, c.Name)
		}
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: cds.VersionInfo, ResponseNonce: cds.Nonce}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds}); err != nil {
		t.Fatal(err)
	}
	got := 0
	for i := 0; got < len(eds); i++ {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += len(r.Resources)
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}
		if i == 0 {
			if got == len(eds) {
				t.Fatalf("%d assignments came in one response; want them split at 200 bytes", got)
			}
			ack.VersionInfo, ack.ErrorDetail = "", &status.Status{Code: 3, Message: "part one is bad"}
		}
		if err := st.Send(ack); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ts xds.TypeStatus
		if ps := ads.Proxies(); len(ps) == 1 {
			ts = ps[0].Types["ClusterLoadAssignment"]
		}
		if ts.Nack != nil && ts.Nack.Message == "part one is bad" && ts.State != xds.Synced {
			t.Logf("EDS after a NACKed first part and ACKed rest: %s, NACK %q", ts.State, ts.Nack.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("EDS after a NACKed first part and ACKed rest: %+v (%+v); want the NACK standing, not SYNCED", ts, ads.Proxies())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
