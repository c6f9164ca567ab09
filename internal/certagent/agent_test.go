package certagent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/dataplane"
)

// response is a Delta SDS response as weft's xDS server sends it (see
// xds/secrets.go), carrying the named parts of m.
func response(t *testing.T, nonce string, m Material, parts ...string) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	r := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.SecretType, Nonce: nonce}
	for _, p := range parts {
		var s *tlsv3.Secret
		switch p {
		case dataplane.WorkloadCertSecret:
			s = &tlsv3.Secret{Name: p, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(m.Chain), PrivateKey: inline(m.Key)}}}
		case dataplane.TrustBundleSecret:
			s = &tlsv3.Secret{Name: p, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(m.Bundle)}}}
		}
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		r.Resources = append(r.Resources, &discoveryv3.Resource{Name: p, Version: nonce + "-" + p, Resource: a})
	}
	return r
}

func newAgent(t *testing.T, dir string) *Agent {
	return newAgentLog(t, dir, logr.Discard())
}

func newAgentLog(t *testing.T, dir string, log logr.Logger) *Agent {
	t.Helper()
	a, err := New(Options{
		XDSAddress: "weft-controller.weft-system.svc:15012", RootCertFile: "/nonexistent", TokenFile: "/nonexistent",
		Node:   Node{ID: "greeter-0.shop", Namespace: "shop", ServiceAccount: "greeter"},
		OutDir: dir, RefreshInterval: 50 * time.Millisecond, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestHandleWritesThenAcks: the first response installs the files and is
// ACKed only after one refresh interval; a renewal of the certificate
// alone keeps the bundle; a re-sent identical certificate (a reconnect) is
// ACKed without touching the files; a withdrawn secret leaves them.
func TestHandleWritesThenAcks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := newRoot(t)
	var logs strings.Builder
	a := newAgentLog(t, dir, funcr.New(func(prefix, args string) { logs.WriteString(prefix + args + "\n") }, funcr.Options{}))
	if a.Ready() == nil {
		t.Fatal("ready before any certificate")
	}
	m1 := issue(t, root, "shop", "greeter")
	start := time.Now()
	reply := a.handle(ctx, response(t, "1", m1, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret))
	if reply.ErrorDetail != nil || reply.ResponseNonce != "1" {
		t.Fatalf("reply %v, want an ACK of nonce 1", reply)
	}
	if waited := time.Since(start); waited < a.o.RefreshInterval {
		t.Fatalf("ACKed after %v, before the application's refresh interval %v", waited, a.o.RefreshInterval)
	}
	if got, err := Read(dir); err != nil || !got.Equal(m1) {
		t.Fatalf("files = %v, %v; want the first certificate", got, err)
	}
	if a.Ready() != nil {
		t.Fatal("not ready after installing a certificate")
	}

	m2 := issue(t, root, "shop", "greeter")
	if reply := a.handle(ctx, response(t, "2", m2, dataplane.WorkloadCertSecret)); reply.ErrorDetail != nil {
		t.Fatalf("renewal NACKed: %v", reply.ErrorDetail)
	}
	got, _ := Read(dir)
	if string(got.Chain) != string(m2.Chain) || string(got.Key) != string(m2.Key) || string(got.Bundle) != string(m1.Bundle) {
		t.Fatal("after a renewal the files do not hold the new certificate and key with the unchanged bundle")
	}

	link, _ := os.Readlink(filepath.Join(dir, dataLink))
	if reply := a.handle(ctx, response(t, "3", m2, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret)); reply.ErrorDetail != nil {
		t.Fatal(reply.ErrorDetail)
	}
	if again, _ := os.Readlink(filepath.Join(dir, dataLink)); again != link {
		t.Fatal("identical material was written again")
	}

	removed := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.SecretType, Nonce: "4", RemovedResources: []string{dataplane.WorkloadCertSecret}}
	if reply := a.handle(ctx, removed); reply.ErrorDetail != nil {
		t.Fatal(reply.ErrorDetail)
	}
	if _, ok := a.versions[dataplane.WorkloadCertSecret]; ok {
		t.Fatal("a withdrawn secret is still announced as held")
	}
	if got, _ := Read(dir); string(got.Chain) != string(m2.Chain) {
		t.Fatal("a withdrawn secret removed the files")
	}

	// The log tells what happened, and never shows a key.
	if !strings.Contains(logs.String(), "installed the workload certificate") {
		t.Fatalf("no installation in the log:\n%s", logs.String())
	}
	for _, m := range []Material{m1, m2} {
		for _, line := range strings.Split(string(m.Key), "\n") {
			if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(logs.String(), line) {
				t.Fatalf("the log shows a private key:\n%s", logs.String())
			}
		}
	}
}

// TestHandleNacks: what the agent cannot use or cannot write is NACKed
// with a message that says why, and the files stay as they were.
func TestHandleNacks(t *testing.T) {
	ctx := context.Background()
	root := newRoot(t)
	good := issue(t, root, "shop", "greeter")
	other := issue(t, root, "shop", "ledger")
	mismatched := Material{Chain: good.Chain, Key: other.Key, Bundle: good.Bundle}
	for _, tc := range []struct {
		name string
		m    Material
		want string
	}{
		{"another identity", other, "spiffe://cluster.local/ns/shop/sa/ledger's, not namespace shop service account greeter's"},
		{"key of another certificate", mismatched, "private key does not match"},
		{"no certificate", Material{Chain: []byte("junk"), Key: good.Key, Bundle: good.Bundle}, "certificate chain does not parse"},
		{"key in the bundle", Material{Chain: good.Chain, Key: good.Key, Bundle: good.Key}, "trust bundle does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newAgent(t, dir)
			if reply := a.handle(ctx, response(t, "1", good, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret)); reply.ErrorDetail != nil {
				t.Fatal(reply.ErrorDetail)
			}
			reply := a.handle(ctx, response(t, "2", tc.m, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret))
			msg := reply.ErrorDetail.GetMessage()
			if reply.ErrorDetail == nil || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "keeping the files in "+dir) {
				t.Fatalf("reply %v, want a NACK saying %q", reply, tc.want)
			}
			for _, line := range strings.Split(string(tc.m.Key), "\n") {
				if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(msg, line) {
					t.Fatalf("the NACK carries key material: %s", msg)
				}
			}
			if got, _ := Read(dir); !got.Equal(good) {
				t.Fatal("a rejected secret changed the files")
			}
			if a.versions[dataplane.WorkloadCertSecret] != "1-"+dataplane.WorkloadCertSecret {
				t.Fatalf("a rejected secret's version is held: %v", a.versions)
			}
		})
	}

	t.Run("cannot write", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		a := newAgent(t, file)
		reply := a.handle(ctx, response(t, "1", good, dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret))
		if msg := reply.ErrorDetail.GetMessage(); !strings.Contains(msg, "cannot install the certificate") || !strings.Contains(msg, file) {
			t.Fatalf("reply %v, want a NACK saying the certificate cannot be installed in %s", reply, file)
		}
		if a.Ready() == nil {
			t.Fatal("ready although nothing was written")
		}
	})

	t.Run("not a secret", func(t *testing.T) {
		a := newAgent(t, t.TempDir())
		reply := a.handle(ctx, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: "1"})
		if !strings.Contains(reply.ErrorDetail.GetMessage(), "secrets only") {
			t.Fatalf("reply %v, want a NACK", reply)
		}
	})
}

func TestNewNamesTheMissingOption(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{XDSAddress: "nohost"}, "not host:port"},
		{Options{XDSAddress: "a:1", Node: Node{ID: "p.ns", Namespace: "ns"}}, "service account"},
		{Options{XDSAddress: "a:1", Node: Node{ID: "p.ns", Namespace: "ns", ServiceAccount: "sa"}}, "output directory"},
		{Options{XDSAddress: "a:1", Node: Node{ID: "p.ns", Namespace: "ns", ServiceAccount: "sa"}, OutDir: "/x"}, "root certificate file"},
		{Options{XDSAddress: "a:1", Node: Node{ID: "p.ns", Namespace: "ns", ServiceAccount: "sa"}, OutDir: "/x", RootCertFile: "/r"}, "token file"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.o, err, tc.want)
		}
	}
}
