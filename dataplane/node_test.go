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
