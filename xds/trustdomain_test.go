package xds_test

import (
	"sort"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/xds"
)

// TestTrustDomainChange: issue 13 — changing the trust domain stripped
// every connected sidecar's secrets: identities were acquired under the
// old domain and released under the new one (references leaked and went
// negative, renewals stopped). Authenticated streams now end with
// Unavailable when the domain changes, each releasing exactly what it
// acquired; reconnecting, they acquire the new identity.
func TestTrustDomainChange(t *testing.T) {
	secrets := &fakeSecrets{acquired: map[string]int{}, version: map[string]string{}}
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(secrets)
	ads.SetAuthenticator(acceptAll{})
	old := mesh(t, 10)
	ads.Update(old, time.Now())
	addr := serve(t, ads)
	c := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret}}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	oldID := "spiffe://" + old.TrustDomain + "/ns/shop/sa/frontend"
	if secrets.acquired[oldID] != 1 {
		t.Fatalf("acquired %v, want %s once", secrets.acquired, oldID)
	}

	next := mesh(t, 10)
	next.TrustDomain = "prod.example.com"
	ads.Update(next, time.Now())
	var err error
	deadline := time.After(5 * time.Second)
	for err == nil {
		select {
		case _, ok := <-c.resps:
			if !ok {
				_, err = c.stream.Recv()
				if err == nil {
					t.Fatal("stream closed without a status")
				}
			}
		case <-deadline:
			t.Fatal("the authenticated stream stayed open across the trust domain change")
		}
	}
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Errorf("the stream ended with %v, want Unavailable (reconnect)", err)
	}
	time.Sleep(100 * time.Millisecond)
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	for id, n := range secrets.acquired {
		if n != 0 {
			t.Errorf("after the stream left, %s is held %d times; want 0 (acquired %v)", id, n, secrets.acquired)
		}
	}
}

// TestDeletedPodsStreamsEnd: issue 13 — a stream outlived its pod and kept
// receiving freshly minted keys. When the cluster no longer has the pod,
// its authenticated streams end; other proxies' do not.
func TestDeletedPodsStreamsEnd(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)
	gone := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	stays := dialDelta(t, addr, node("ledger-0.other", "other", "ledger"), nil)
	gone.settle()
	stays.settle()
	if n := ads.PodGone("shop", "frontend-0"); n != 1 {
		t.Fatalf("PodGone ended %d streams, want 1", n)
	}
	select {
	case _, ok := <-gone.resps:
		if ok {
			t.Fatal("a response after the pod was gone")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deleted pod's stream stayed open")
	}
	if _, err := gone.stream.Recv(); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Errorf("the deleted pod's stream ended with %v, want Unauthenticated", err)
	}
	if len(ads.Proxies()) != 1 || ads.Proxies()[0].ID != "ledger-0.other" {
		t.Errorf("connected after the deletion: %+v; want only ledger-0.other", ads.Proxies())
	}
}

// TestDeletedServiceAccountsStreamsEnd: issue 13 — a stream outlived its
// service account and kept receiving that identity's renewed keys until
// its connection's age or its token's expiry. When the cluster no longer
// has the service account, every authenticated stream of it ends at once
// (Unauthenticated), whichever pod it came from; other identities' streams
// and the same name in another namespace stay.
func TestDeletedServiceAccountsStreamsEnd(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)
	gone := []*deltaClient{
		dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil),
		dialDelta(t, addr, node("frontend-1.shop", "shop", "frontend"), nil),
	}
	stays := []*deltaClient{
		dialDelta(t, addr, node("ledger-0.shop", "shop", "ledger"), nil),
		dialDelta(t, addr, node("frontend-0.other", "other", "frontend"), nil),
	}
	for _, c := range append(append([]*deltaClient{}, gone...), stays...) {
		c.settle()
	}
	if n := ads.ServiceAccountGone("shop", "frontend"); n != 2 {
		t.Fatalf("ServiceAccountGone ended %d streams, want 2", n)
	}
	for _, c := range gone {
		select {
		case _, ok := <-c.resps:
			if ok {
				t.Fatal("a response after the service account was gone")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream of the deleted service account stayed open")
		}
		if _, err := c.stream.Recv(); grpcstatus.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "service account shop/frontend no longer exists") {
			t.Errorf("the stream ended with %v, want Unauthenticated naming the service account", err)
		}
	}
	var ids []string
	for _, p := range ads.Proxies() {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	if strings.Join(ids, " ") != "frontend-0.other ledger-0.shop" {
		t.Errorf("connected after the deletion: %v; want frontend-0.other ledger-0.shop", ids)
	}
}
