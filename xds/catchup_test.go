package xds_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	weftxds "github.com/weftmesh/weft/xds"
)

// TestCatchUpWithoutACKNotifiesStatus: a proxy whose configuration carries
// a policy but whose subscribed resources do not change with it (a
// proxyless gRPC server carries its namespace's TrafficSplit, yet takes
// only its own listener) is never sent anything for the policy's new
// generation, so it never ACKs: it becomes current when the server finds
// nothing to send. The policy status writer learns of that only through
// OnAck, so OnAck must hear it then too — or a status computed earlier
// (`Waiting for N proxies`) stays Pending, and `kubectl wait
// --for=condition=Programmed` never returns (issue 16's canary scenario
// met it: every proxy SYNCED, the TrafficSplit Pending for good).
func TestCatchUpWithoutACKNotifiesStatus(t *testing.T) {
	ads := weftxds.NewADS(logr.Discard())
	var mu sync.Mutex
	notified := map[string]int{} // TrafficSplit shop/checkout generation → notifications
	ads.OnAck(func(refs []ir.PolicyRef) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range refs {
			if r.Kind == "TrafficSplit" && r.Namespace == "shop" && r.Name == "checkout" {
				notified[fmt.Sprint(r.Generation)]++
			}
		}
	})
	addr := serve(t, ads)
	dir := t.TempDir()
	ca := testpki.NewCA(t)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	update := func(w1, w2 int) {
		in, err := translator.DecodeInputs([]byte(fmt.Sprintf(grpcMesh, port, port, port+1, port+1, w2, w1, w2)))
		if err != nil {
			t.Fatal(err)
		}
		ads.Update(translator.Translate(in).Mesh, time.Now())
	}
	update(80, 20)
	files := ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/checkout-v1")
	boot := bootstrapFor(t, addr, "checkout-v1.shop", "checkout-v1", map[string]any{"app": "checkout-v1"}, files)
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.BootstrapContentsForTesting(boot))
	if err != nil {
		t.Fatal(err)
	}
	srv.RegisterService(&whoService, "v1")
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 20}
	eventually(t, func() bool { return ads.PolicyState(ref).Programmed() }, "generation 20 programmed on the server's stream")

	// The weights change the route configuration of checkout, which the
	// server's group holds and the server does not subscribe to.
	update(70, 30)
	ref.Generation = 30
	eventually(t, func() bool { return ads.PolicyState(ref).Programmed() }, "generation 30 programmed on the server's stream")
	eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return notified["30"] > 0
	}, "OnAck hearing generation 30 of the TrafficSplit once the server's stream is current with it")
}
