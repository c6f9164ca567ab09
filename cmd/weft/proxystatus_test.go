package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/internal/cli/proxystatus"
	"github.com/weftmesh/weft/xds"
)

// TestProxyStatus serves two replicas' /debug/proxies (xds.ProxyStatus,
// the type the controller encodes) and a third that fails, and compares
// `weft proxy-status --address ...` with testdata/proxy-status/replicas.golden (its own folder: TestGolden owns testdata/*.golden).
func TestProxyStatus(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 0, time.UTC)
	serve := func(ps []xds.ProxyStatus) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/debug/proxies" {
				http.NotFound(w, r)
				return
			}
			_ = json.NewEncoder(w).Encode(ps)
		}))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	synced := func(g uint64) xds.TypeStatus { return xds.TypeStatus{State: xds.Synced, SentGen: g, AckedGen: g} }
	a := serve([]xds.ProxyStatus{
		{ID: "web-0.shop", Stream: 1, Namespace: "shop", Identity: "web", Kind: "sidecar", Protocol: "delta", Generation: 7, Types: map[string]xds.TypeStatus{
			"Cluster": synced(7), "ClusterLoadAssignment": synced(7), "Listener": synced(7), "RouteConfiguration": synced(7), "Secret": synced(7)}},
		{ID: "client-0.shop", Stream: 2, Namespace: "shop", Identity: "client", Kind: "sidecar", Protocol: "delta", Generation: 9, Types: map[string]xds.TypeStatus{
			"Cluster": synced(9), "ClusterLoadAssignment": synced(9), "Listener": synced(9), "Secret": synced(9),
			"RouteConfiguration": {State: xds.Nacked, SentGen: 9, AckedGen: 8, Nack: &xds.Nack{Message: "route: weighted_clusters: total weight 0", At: at,
				Node: "client-0.shop", Type: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", Resources: []string{"80"}, MoreResources: 2}}}},
	})
	b := serve([]xds.ProxyStatus{
		{ID: "rpc-0.shop", Stream: 5, Namespace: "shop", Identity: "rpc", Kind: "grpc", Protocol: "sotw", Generation: 3, Types: map[string]xds.TypeStatus{
			"Listener": synced(3), "RouteConfiguration": {State: xds.Stale, SentGen: 3, AckedGen: 2}}},
	})
	// The command, with --address: every replica read, one that does not
	// answer reported, not fatal.
	cmd := proxyStatusCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceErrors = true
	cmd.SetArgs([]string{"--address", a, "--address", b, "--address", "127.0.0.1:1"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NACKED 8/9", "STALE 2/3", "replica 127.0.0.1:1 did not answer: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The golden, with stable replica names.
	var rs []proxystatus.Replica
	for name, addr := range map[string]string{"weft-controller-a": a, "weft-controller-b": b} {
		ps, err := proxystatus.Fetch(context.Background(), http.DefaultClient, "http://"+addr)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, proxystatus.Replica{Name: name, Proxies: ps})
	}
	rs = append(rs, proxystatus.Replica{Name: "weft-controller-c", Err: errors.New("port-forward to weft-system/weft-controller-c:15014: pod is not running")})
	var golden bytes.Buffer
	if n := proxystatus.Print(&golden, rs); n != 1 {
		t.Errorf("Print counted %d NACKed streams, want 1", n)
	}
	got := golden.String()
	path := filepath.Join("testdata", "proxy-status", "replicas.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	exp, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update, then read it)", err)
	}
	if d := cmp.Diff(string(exp), got); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}
