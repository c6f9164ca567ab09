package certagent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/certs"
)

// TestBootstrap: by default the application's xDS stream goes to the
// given (TLS) address with "tls" channel credentials over the agent's
// files — the workload certificate and key, and the copy of the mesh root
// for the server — and with Plaintext it uses "insecure"; gRPC-Go's own
// parser accepts both. Addresses are host:port or gRPC targets; anything
// else is refused with the address named.
func TestBootstrap(t *testing.T) {
	node := Node{ID: "greeter-0.shop", Namespace: "shop", ServiceAccount: "greeter", Labels: map[string]string{"app": "greeter"}, IPs: []string{"10.0.0.7"}}
	type creds struct {
		Type   string            `json:"type"`
		Config map[string]string `json:"config"`
	}
	read := func(t *testing.T, c BootstrapConfig) creds {
		t.Helper()
		b, err := Bootstrap(c)
		if err != nil {
			t.Fatal(err)
		}
		// gRPC-Go parses it as the application would.
		if _, err := xds.NewXDSResolverWithConfigForTesting(b); err != nil {
			t.Fatalf("gRPC-Go refuses the bootstrap: %v\n%s", err, b)
		}
		var got struct {
			Servers []struct {
				URI   string  `json:"server_uri"`
				Creds []creds `json:"channel_creds"`
			} `json:"xds_servers"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Servers) != 1 || got.Servers[0].URI != c.XDSAddress || len(got.Servers[0].Creds) != 1 {
			t.Fatalf("xds_servers %+v, want one: %s", got.Servers, c.XDSAddress)
		}
		return got.Servers[0].Creds[0]
	}

	tlsCreds := read(t, BootstrapConfig{XDSAddress: "weft-controller.weft-system.svc:15012", Node: node, CertDir: "/var/run/weft/grpc/certs", RefreshInterval: 2 * time.Second})
	want := creds{Type: "tls", Config: map[string]string{
		"ca_certificate_file": "/var/run/weft/grpc/certs/xds-root-cert.pem",
		"certificate_file":    "/var/run/weft/grpc/certs/cert-chain.pem",
		"private_key_file":    "/var/run/weft/grpc/certs/key.pem",
		"refresh_interval":    "2s",
	}}
	if tlsCreds.Type != want.Type || len(tlsCreds.Config) != len(want.Config) {
		t.Fatalf("channel credentials %+v, want %+v", tlsCreds, want)
	}
	for k, v := range want.Config {
		if tlsCreds.Config[k] != v {
			t.Errorf("tls config %s = %q, want %q", k, tlsCreds.Config[k], v)
		}
	}
	if c := read(t, BootstrapConfig{XDSAddress: "weft-controller.weft-system.svc:15010", Plaintext: true, Node: node, CertDir: "/certs"}); c.Type != "insecure" || c.Config != nil {
		t.Fatalf("plaintext channel credentials %+v, want insecure", c)
	}
	read(t, BootstrapConfig{XDSAddress: "dns:///weft-controller.weft-system.svc:15012", Node: node, CertDir: "/certs"})

	for _, addr := range []string{"weft-controller.weft-system.svc", "dns:///weft-controller", "://x:1", ""} {
		_, err := Bootstrap(BootstrapConfig{XDSAddress: addr, Node: node, CertDir: "/certs"})
		if err == nil || !strings.Contains(err.Error(), `"`+addr+`"`) || !strings.Contains(err.Error(), "host:port") {
			t.Errorf("address %q: %v, want an error naming it and host:port", addr, err)
		}
	}
}

// TestXDSRootsFollowTheMountedRoot: the copy of the mesh root that the
// application verifies weft-controller with follows the mounted file (the
// kubelet rewrites it during a root rotation), and keeps the last good
// roots when the file holds no certificate.
func TestXDSRootsFollowTheMountedRoot(t *testing.T) {
	dir := t.TempDir()
	mounted := filepath.Join(dir, "root-cert.pem")
	out := filepath.Join(dir, "certs")
	a, err := New(Options{
		XDSAddress: "weft-controller.weft-system.svc:15012", RootCertFile: mounted, TokenFile: "/nonexistent",
		Node: Node{ID: "greeter-0.shop", Namespace: "shop", ServiceAccount: "greeter"}, OutDir: out,
		RefreshInterval: 20 * time.Millisecond, Log: logr.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	first := certs.EncodeCertificatesPEM([]*x509.Certificate{newRoot(t).Cert})
	both := append(append([]byte{}, first...), certs.EncodeCertificatesPEM([]*x509.Certificate{newRoot(t).Cert})...)
	if err := os.WriteFile(mounted, first, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.followXDSRoots(ctx) }()
	defer func() { cancel(); <-done }()

	copied := func(want []byte, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, _ := os.ReadFile(filepath.Join(out, XDSRootFile))
			if bytes.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s in %s", what, XDSRootFile)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	copied(first, "the mounted root")
	if err := os.WriteFile(mounted, both, 0o644); err != nil {
		t.Fatal(err)
	}
	copied(both, "the new root beside the old one")
	if err := os.WriteFile(mounted, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Several intervals later, the last good roots are still there.
	time.Sleep(10 * a.o.RefreshInterval)
	copied(both, "the last good roots")
}
