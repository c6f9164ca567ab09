// Package e2e runs weft as a user does: real binaries, built here, against a
// real kube-apiserver and etcd.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/xds"
)

// binDir holds weft's binaries, built once for this test binary.
var binDir string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "weft-e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	root, err := testenv.RepoRoot()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/weft-controller", "./cmd/weft", "./hack/weft-run", "./hack/weft-demo")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build: %v\n%s", err, out)
	}
	binDir = dir
	return m.Run(), nil
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freeAddr returns a loopback address with a port that was free a moment
// ago, never the same twice in this test binary (localmesh.FreeAddr: the
// launcher hands out its processes' addresses from the same pool, so a
// test's and a mesh's addresses cannot collide).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := localmesh.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// saToken creates service account ns/name (and its namespace, if needed)
// and returns a token for audience weft from the API server, as the
// kubelet projects for injected sidecars.
func saToken(t *testing.T, env *testenv.Env, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{xds.TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// dialSidecarPort dials weft-controller's authenticated xDS port as a
// sidecar does: TLS verified against the mesh root (read from its Secret,
// which the leader creates, so this waits for it) under the Service's
// name. Only streams on this port count toward policy status; the
// proxy proves its identity with a token (xdsload.Proxy.Token).
func dialSidecarPort(t *testing.T, env *testenv.Env, addr string) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	testkit.Eventually(t, "the mesh root Secret weft-system/weft-ca-root", func() error {
		var root corev1.Secret
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "weft-system", Name: "weft-ca-root"}, &root); err != nil {
			return err
		}
		if !pool.AppendCertsFromPEM(root.Data["ca.crt"]) {
			return errors.New("the root Secret has no ca.crt")
		}
		return nil
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "weft-controller.weft-system.svc", MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
