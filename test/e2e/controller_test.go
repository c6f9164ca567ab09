package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestController runs the weft-controller binary against a real API server:
// it serves xDS, metrics and probes, takes the leader Lease, and on SIGTERM
// closes its streams, releases the Lease and exits 0.
func TestController(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}

	xdsAddr, monAddr, xdsTLSAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin("weft-controller"), "--kubeconfig", env.Kubeconfig,
		"--xds-address", xdsAddr, "--monitoring-address", monAddr, "--debug-address", freeAddr(t), "--webhook-address", freeAddr(t), "--xds-tls-address", xdsTLSAddr)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("weft-controller output:\n%s", logs.String())
		}
	})

	testkit.Eventually(t, "readyz", func() error {
		select {
		case err := <-exited:
			t.Fatalf("weft-controller exited before it was ready: %v", err)
		default:
		}
		body, code, err := httpGet("http://" + monAddr + "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d: %s", code, body)
		}
		return err
	})
	if body, code, err := httpGet("http://" + monAddr + "/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("healthz = %d %q, %v", code, body, err)
	}

	lease := &coordinationv1.Lease{}
	testkit.Eventually(t, "leader lease", func() error {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return errors.New("lease has no holder")
		}
		return nil
	})

	t.Run("metrics", func(t *testing.T) {
		testkit.Eventually(t, "leader metric", func() error {
			body, _, err := httpGet("http://" + monAddr + "/metrics")
			if err != nil {
				return err
			}
			for _, want := range []string{
				`weft_build_info{go_version="go`,
				"go_goroutines ",
				"process_resident_memory_bytes ",
				`leader_election_master_status{name="weft-controller"} 1`,
			} {
				if !strings.Contains(body, want) {
					return fmt.Errorf("/metrics lacks %q", want)
				}
			}
			return nil
		})
	})

	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Run("grpc health", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check = %v, %v; want SERVING", resp, err)
		}
	})

	// An ADS stream from a proxy gets its configuration; a node without
	// the metadata weft needs is refused with a message naming it.
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	bad, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = bad.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "x"}, TypeUrl: resourcev3.ClusterType})
	if _, err := bad.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), dataplane.MetaNamespace) {
		t.Fatalf("node without metadata: %v, want InvalidArgument naming %s", err, dataplane.MetaNamespace)
	}
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: "web"})
	webNode := &corev3.Node{Id: "web-0.shop", Metadata: md}

	// Sidecars dial the TLS port, verifying the server against the mesh
	// root (the weft-root-ca ConfigMap; here read from its Secret) under the
	// Service's name, and prove their identity with a token.
	var rootSecret corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-ca-root"}, &rootSecret); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootSecret.Data["ca.crt"]) {
		t.Fatal("the root Secret has no ca.crt")
	}
	tlsConn, err := grpc.NewClient(xdsTLSAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "weft-controller.weft-system.svc"})))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsConn.Close()
	tlsADS := discoveryv3.NewAggregatedDiscoveryServiceClient(tlsConn)
	// Without a token, and with another service account's token, the
	// stream is refused, saying why.
	token := saToken(t, env, "shop", "web")
	for _, tc := range []struct {
		token string
		code  codes.Code
		msg   string
	}{
		{"", codes.Unauthenticated, `audience "weft"`},
		{saToken(t, env, "shop", "intruder"), codes.PermissionDenied, "system:serviceaccount:shop:intruder"},
	} {
		sctx := ctx
		if tc.token != "" {
			sctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
		}
		s, err := tlsADS.DeltaAggregatedResources(sctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: webNode, TypeUrl: resourcev3.ClusterType})
		if _, err := s.Recv(); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("token %.10q: %v, want %v mentioning %s", tc.token, err, tc.code, tc.msg)
		}
	}
	tlsStream, err := tlsADS.DeltaAggregatedResources(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token))
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsStream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: webNode, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsStream.Recv(); err != nil {
		t.Fatalf("xDS over TLS with a valid token: %v", err)
	}

	// The plaintext port serves configuration without authentication (for
	// proxyless gRPC clients), never secrets.
	stream, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: webNode, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.Resources {
		got = append(got, r.Name)
	}
	if !slices.Contains(got, dataplane.PassthroughCluster) {
		t.Fatalf("a new proxy received clusters %v, want at least %s", got, dataplane.PassthroughCluster)
	}
	recvErr := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		recvErr <- err
	}()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("weft-controller exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("weft-controller still running 60s after SIGTERM")
	}
	select {
	case err := <-recvErr:
		if code := status.Code(err); code != codes.Unavailable && code != codes.Canceled {
			t.Fatalf("ADS stream ended with %v, want Unavailable", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ADS stream still open after the server exited")
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Fatalf("lease still held by %q after shutdown; want it released for the next replica", *h)
	}
	if _, _, err := httpGet("http://" + monAddr + "/healthz"); err == nil {
		t.Fatal("monitoring port still answers after exit")
	}
}

// TestControllerBadFlags checks that a bad command line fails at once with
// one line that names the flag, before any connection is attempted.
func TestControllerBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--xds-address", "15010"}, "--xds-address"},
		{[]string{"--monitoring-address", "localhost:http"}, "--monitoring-address"},
		{[]string{"--leader-elect=perhaps"}, "--leader-elect"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--debug-address", "nope"}, "--debug-address"},
		{[]string{"--kubeconfig", "/does/not/exist"}, "--kubeconfig"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin("weft-controller"), tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit = %v, want a non-zero exit", err)
			}
			msg := strings.TrimSuffix(stderr.String(), "\n")
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "weft-controller: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr = %q, want one line naming %s", stderr.String(), tc.want)
			}
		})
	}
}

func httpGet(url string) (string, int, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}
