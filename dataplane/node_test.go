package dataplane_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane"
)

// The metadata a bootstrap writes is what the server reads back, after the
// trip through the bootstrap's JSON that every proxy makes.
func TestNodeMetadataRoundTrip(t *testing.T) {
	in := dataplane.NodeMeta{
		PodName: "web-0", Namespace: "shop", ServiceAccount: "web",
		PodIPs: "10.1.2.3, fd00::3", Labels: map[string]string{"app": "web"},
		Kind: dataplane.KindNameGRPC, AppProbes: `{"/app-health/web/readyz":{"port":8080,"path":"/readyz","scheme":"HTTP","timeoutSeconds":1}}`,
	}
	raw, err := json.Marshal(dataplane.NodeMetadata(in))
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	got, err := dataplane.ParseNode("web-0.shop", md)
	if err != nil {
		t.Fatal(err)
	}
	want := dataplane.Proxy{
		Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"},
		IPs: []string{"10.1.2.3", "fd00::3"}, Kind: dataplane.KindGRPC,
		AppProbes: map[string]dataplane.AppProbe{"/app-health/web/readyz": {Port: 8080, Path: "/readyz", Scheme: "HTTP", TimeoutSeconds: 1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseNode(NodeMetadata(m)) = %+v, want %+v", got, want)
	}
	if got.Identity("cluster.local") != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("identity %s", got.Identity("cluster.local"))
	}
}

func TestParseNodeErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		id   string
		md   map[string]any
		want string
	}{
		{"", nil, "node.id is empty"},
		{"p.ns", map[string]any{dataplane.MetaNamespace: "ns"}, dataplane.MetaServiceAccount},
		{"p.ns", map[string]any{dataplane.MetaNamespace: "ns", dataplane.MetaServiceAccount: "sa", dataplane.MetaProxyKind: "ambient"}, dataplane.MetaProxyKind},
		{"p.ns", map[string]any{dataplane.MetaNamespace: "ns", dataplane.MetaServiceAccount: "sa", dataplane.MetaAppProbes: "{"}, dataplane.MetaAppProbes},
	} {
		_, err := dataplane.ParseNode(c.id, c.md)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseNode(%q, %v) = %v, want an error naming %s", c.id, c.md, err, c.want)
		}
	}
}

func TestExcludedInboundPorts(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "[]"},
		{[]string{"--proxy-uid=1337", "--exclude-inbound-ports=8080, 9090"}, "[8080 9090]"},
		{[]string{"--exclude-inbound-ports", "7777"}, "[7777]"},
		{[]string{"--exclude-inbound-ports=1", "--exclude-inbound-ports=2,x,0"}, "[2]"},
		{[]string{"--exclude-outbound-ports=5432"}, "[]"},
	} {
		if got := fmt.Sprint(dataplane.ExcludedInboundPorts(tc.args)); got != tc.want {
			t.Errorf("ExcludedInboundPorts(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

// TestParseNodeRefusesBadProbes: node metadata is the client's word, so its
// probes are checked before the control plane builds from them (issue 13:
// an invalid port made every build of the group fail).
func TestParseNodeRefusesBadProbes(t *testing.T) {
	md := func(probes string) map[string]any {
		return map[string]any{dataplane.MetaNamespace: "ns", dataplane.MetaServiceAccount: "sa", dataplane.MetaAppProbes: probes}
	}
	for probes, want := range map[string]string{
		`{"/app-health/a/readyz":{"port":70000,"path":"/","scheme":"HTTP"}}`:                     "port 70000",
		`{"/app-health/a/readyz":{"port":0,"path":"/","scheme":"HTTP"}}`:                         "port 0",
		`{"/elsewhere":{"port":80,"path":"/","scheme":"HTTP"}}`:                                  "is not /app-health/",
		`{"/app-health/a/readyz":{"port":80,"path":"no-slash","scheme":"HTTP"}}`:                 "not an absolute path",
		`{"/app-health/a/readyz":{"port":80,"path":"/a b","scheme":"HTTP"}}`:                     "not an absolute path",
		`{"/app-health/a/readyz":{"port":80,"path":"/","scheme":"FTP"}}`:                         "scheme",
		`{"/app-health/a/readyz":{"port":80,"path":"/","scheme":"HTTP","timeoutSeconds":99999}}`: "timeoutSeconds",
	} {
		_, err := dataplane.ParseNode("p.ns", md(probes))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("probes %s: err = %v, want one naming %q", probes, err, want)
		}
	}
	many := map[string]dataplane.AppProbe{}
	for i := range dataplane.MaxAppProbes + 1 {
		many[fmt.Sprintf("/app-health/c%d/readyz", i)] = dataplane.AppProbe{Port: 80, Path: "/", Scheme: "HTTP"}
	}
	if err := dataplane.ValidateAppProbes(many); err == nil {
		t.Errorf("%d probes accepted; want at most %d", len(many), dataplane.MaxAppProbes)
	}
	if _, err := dataplane.ParseNode("p.ns", md(`{"/app-health/web/readyz":{"port":8080,"path":"/readyz?x=1","scheme":"HTTPS","timeoutSeconds":1}}`)); err != nil {
		t.Errorf("a valid probe was refused: %v", err)
	}
}
