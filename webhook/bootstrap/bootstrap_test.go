package bootstrap

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpccredv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/xds"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

func TestGolden(t *testing.T) {
	got, err := JSON(Config{Labels: map[string]string{"app": "checkout", "version": "v2"}})
	if err != nil {
		t.Fatal(err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(got), "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	const path = "testdata/sidecar.json"
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./webhook/bootstrap -update, then read it)", err)
	}
	if pretty.String() != string(want) {
		t.Errorf("bootstrap differs from %s (run with -update and read the diff):\n%s", path, pretty.String())
	}
}

// TestRoundTrip parses the JSON the way Envoy does (strictly, as a v3
// Bootstrap) and checks what the sidecar depends on.
func TestRoundTrip(t *testing.T) {
	s, err := JSON(Config{XDSAddress: "xds.example:443"})
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(s), &b); err != nil {
		t.Fatalf("Envoy could not parse the bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 15000 {
		t.Errorf("admin listens on %s:%d, want 127.0.0.1:15000", a.GetAddress(), a.GetPortValue())
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("ADS is %v/%v, want DELTA_GRPC/V3", ads.GetApiType(), ads.GetTransportApiVersion())
	}
	g := ads.GetGrpcServices()[0].GetGoogleGrpc()
	if g.GetTargetUri() != "xds.example:443" {
		t.Errorf("target %q", g.GetTargetUri())
	}
	if g.GetChannelCredentials().GetSslCredentials().GetRootCerts().GetFilename() != "/var/run/weft/credentials/root-cert.pem" {
		t.Errorf("xDS TLS is not verified with the mesh root: %v", g.GetChannelCredentials())
	}
	var tok grpccredv3.FileBasedMetadataConfig
	if err := g.GetCallCredentials()[0].GetFromPlugin().GetTypedConfig().UnmarshalTo(&tok); err != nil {
		t.Fatal(err)
	}
	if tok.GetSecretData().GetFilename() != "/var/run/weft/credentials/token" || tok.GetHeaderPrefix() != "Bearer " {
		t.Errorf("token credentials: %v", &tok)
	}
	for name, cs := range map[string]*corev3.ConfigSource{"LDS": b.GetDynamicResources().GetLdsConfig(), "CDS": b.GetDynamicResources().GetCdsConfig()} {
		if cs.GetAds() == nil || cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("%s is not over ADS v3: %v", name, cs)
		}
	}
	if b.GetNode().GetId() != "$(WEFT_POD_NAME).$(WEFT_POD_NAMESPACE)" {
		t.Errorf("node id %q", b.GetNode().GetId())
	}
}

// TestNodeIsWhatTheControllerReads expands the $(WEFT_...) references as
// the kubelet would and parses the node with weft-controller's own parser.
func TestNodeIsWhatTheControllerReads(t *testing.T) {
	s, err := JSON(Config{Labels: map[string]string{"app": "checkout"}})
	if err != nil {
		t.Fatal(err)
	}
	s = strings.NewReplacer("$(WEFT_POD_NAME)", "checkout-7d9f", "$(WEFT_POD_NAMESPACE)", "shop",
		"$(WEFT_SERVICE_ACCOUNT)", "checkout", "$(WEFT_POD_IPS)", "10.1.2.3,fd00::3").Replace(s)
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(s), &b); err != nil {
		t.Fatal(err)
	}
	info, err := xds.ParseNode(b.GetNode())
	if err != nil {
		t.Fatalf("weft-controller rejects the node: %v", err)
	}
	want := dataplane.Proxy{Namespace: "shop", ServiceAccount: "checkout", Labels: map[string]string{"app": "checkout"}, IPs: []string{"10.1.2.3", "fd00::3"}, Kind: dataplane.KindSidecar}
	if info.ID != "checkout-7d9f.shop" || !reflect.DeepEqual(info.Proxy, want) {
		t.Errorf("node parsed as %s %+v, want checkout-7d9f.shop %+v", info.ID, info.Proxy, want)
	}
}

func TestStable(t *testing.T) {
	c := Config{Labels: map[string]string{"b": "2", "a": "1", "c": "3"}}
	first, _ := JSON(c)
	for range 20 {
		if s, _ := JSON(c); s != first {
			t.Fatalf("JSON is not stable:\n%s\n%s", first, s)
		}
	}
	if strings.Contains(first, "\n") {
		t.Errorf("JSON is not compact: %s", first)
	}
}

func TestBadAddress(t *testing.T) {
	if _, err := JSON(Config{XDSAddress: "weft-controller"}); err == nil || !strings.Contains(err.Error(), "not host:port") {
		t.Errorf("got %v", err)
	}
}
