package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	grpcresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	weftxds "github.com/weftmesh/weft/xds"
)

// TestProxylessMTLS runs proxyless gRPC with weft's certificates, as a
// user's cluster would: the real weft-controller binary on a real API
// server, `weft agent` processes that fetch each workload's certificate
// over the authenticated xDS port (with a pod-bound ServiceAccount token,
// verifying the server against the weft-root-ca ConfigMap) and write the
// files and bootstrap that a real gRPC-Go xDS server and client use, and
// cert-manager's own controllers (CA issuer and approver) when MeshConfig
// selects cert-manager.
//
//   - the server's and the client's own xDS streams go to the same
//     authenticated port and prove their identity with the workload
//     certificate from the agent's files (the controller's /debug/proxies
//     says "certificate"), verifying the controller with the agent's copy
//     of weft-root-ca;
//   - a call succeeds over mutual TLS with certificates from the built-in CA;
//   - Strict mode (the namespace label) rejects a plaintext client, which
//     sees the TLS server hang up ("error reading server preface: EOF");
//   - while a client sends a steady stream of RPCs, every workload
//     certificate is replaced twice — MeshConfig switches to cert-manager
//     (an Issuer over the mesh root, so trust does not change) and back —
//     and then the built-in CA's root is rotated (new bundle, leaves from
//     the new root, old root retired), and not one RPC fails. The server closes connections after a
//     second (MaxConnectionAge), so handshakes keep happening with whatever
//     the files hold; the test sees the new certificates on both sides.
//     A client started after the rotation still gets its configuration:
//     the controller's certificate now comes from the new root, which the
//     agent's copy of weft-root-ca holds.
func TestProxylessMTLS(t *testing.T) {
	ctrllog.SetLogger(logr.Discard()) // the test's clients have nothing to say
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		// Injection-enabled: weft publishes weft-root-ca here.
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}},
	} {
		if err := env.Client.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	startCertManager(t, env)

	xdsTLSAddr, debugAddr := freeAddr(t), freeAddr(t)
	startProcess(t, "weft-controller", bin("weft-controller"), "--kubeconfig", env.Kubeconfig,
		"--xds-address", freeAddr(t), "--xds-tls-address", xdsTLSAddr, "--monitoring-address", freeAddr(t),
		"--debug-address", debugAddr, "--webhook-address", freeAddr(t), "--log-format", "text")

	// The greeter's address, known before the controller describes it.
	lis := listenHost(t)
	ip, port := lis.Addr().(*net.TCPAddr).IP.String(), lis.Addr().(*net.TCPAddr).Port
	if _, err := env.Kubectl(ctx, []byte(fmt.Sprintf(proxylessYAML, port, port, ip)), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// What the kubelet would mount: the weft-root-ca ConfigMap and a
	// token for audience weft bound to the pod.
	var rootPEM []byte
	testkit.Eventually(t, "weft-root-ca in namespace shop", func() error {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "weft-root-ca"}, &cm); err != nil {
			return err
		}
		rootPEM = []byte(cm.Data["root-cert.pem"])
		return nil
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("weft-root-ca holds no certificate")
	}
	agents := map[string]*agentProc{}
	var rootFiles []string
	for _, sa := range []string{"greeter", "frontend"} {
		agents[sa] = startAgent(t, ctx, cs, sa, ip, rootPEM, xdsTLSAddr)
		rootFiles = append(rootFiles, agents[sa].rootFile)
	}
	go projectRootCA(ctx, env.Client, rootFiles)
	for sa, a := range agents {
		testkit.Eventually(t, sa+"'s agent ready", func() error { return a.ready() })
	}

	srv := startGreeter(t, lis, agents["greeter"].bootstrap(t))
	defer srv.Stop()
	resolver, err := xds.NewXDSResolverWithConfigForTesting(agents["frontend"].bootstrap(t))
	if err != nil {
		t.Fatal(err)
	}
	ccreds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(ccreds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// (a) mTLS with the built-in CA: the server presents greeter's
	// certificate, signed by an intermediate under the published root, and
	// sees frontend's.
	first, err := hello(ctx, conn, true)
	if err != nil {
		t.Fatalf("RPC over mTLS: %v", err)
	}
	if first.server.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/greeter" || first.client != "spiffe://cluster.local/ns/shop/sa/frontend" {
		t.Fatalf("server %s, client %s: want greeter and frontend", first.server.URIs[0], first.client)
	}
	if err := verifies(first, roots); err != nil {
		t.Fatalf("the server's chain does not verify against weft-root-ca: %v", err)
	}
	if chainLen(first, roots) != 3 {
		t.Fatal("the first certificate is not the built-in CA's (signed by an intermediate)")
	}
	// The applications' xDS streams authenticated with their certificates
	// (the agents', which fetch them, with their tokens).
	testkit.Eventually(t, "the applications' xDS streams authenticated by certificate", func() error {
		return proxiesAuthenticated(debugAddr, map[string]int{
			"greeter-0.shop certificate": 1, "frontend-0.shop certificate": 1, "greeter-0.shop token": 1, "frontend-0.shop token": 1})
	})

	// (d) Strict: a plaintext client reaches the port and is refused — the
	// server speaks TLS first and hangs up on the client's HTTP/2 preface —
	// while the mesh client still gets through. A proxyless gRPC server
	// cannot tell mTLS from plaintext on one port, so weft makes it
	// mTLS-only in either mode (docs/design/003): the same refusal is
	// checked before the label, in the default Permissive mode.
	plaintext := func() error {
		plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		return plain.Invoke(pctx, "/weft.e2e.Greeter/Hello", &emptypb.Empty{}, &wrapperspb.StringValue{})
	}
	refused := func(err error) bool {
		return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "error reading server preface")
	}
	if err := plaintext(); !refused(err) {
		t.Fatalf("Permissive: a plaintext client got %v; want Unavailable, error reading server preface", err)
	}
	if err := env.Client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/mtls-mode": "Strict"}}}, client.Merge); err != nil {
		t.Fatal(err)
	}
	err = plaintext()
	if !refused(err) {
		t.Fatalf("Strict: a plaintext client got %v; want Unavailable, error reading server preface", err)
	}
	t.Logf("Strict: the plaintext client sees: %v", err)
	if _, err := hello(ctx, conn, true); err != nil {
		t.Fatalf("the mTLS client after Strict: %v", err)
	}

	// (b, c) A steady stream of RPCs while every leaf is replaced twice.
	if err := env.Client.Create(ctx, &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-ca"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "weft-ca-root"}}},
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "cert-manager's Issuer weft-ca Ready", func() error {
		var iss cmapi.Issuer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-ca"}, &iss); err != nil {
			return err
		}
		for _, c := range iss.Status.Conditions {
			if c.Type == cmapi.IssuerConditionReady && c.Status == cmmeta.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", iss.Status.Conditions)
	})

	st := startStream(ctx, conn)
	setProvider(t, ctx, env, v1alpha1.CertificateProviderCertManager)
	st.waitFor(t, "both sides on cert-manager's certificates", func(r result) bool {
		return chainLen(r, roots) == 2 && !r.clientBuiltIn && r.client == "spiffe://cluster.local/ns/shop/sa/frontend"
	})
	setProvider(t, ctx, env, v1alpha1.CertificateProviderBuiltIn)
	st.waitFor(t, "both sides back on the built-in CA's certificates", func(r result) bool {
		return chainLen(r, roots) == 3 && r.clientBuiltIn && r.server.SerialNumber.Cmp(first.server.SerialNumber) != 0
	})

	// (c) and the root: the built-in CA's root rotation (weft ca
	// rotate-root), whose steps each wait for every agent's ACK — which
	// the agent gives once gRPC has re-read its files.
	start := time.Now()
	gen, err := rootrotation.Rotate(ctx, env.Client, "weft-system", func(p rootrotation.Progress) {
		t.Logf("root rotation: %s %s", p.Status.Phase, rootrotation.Describe(p))
	})
	if err != nil {
		t.Fatalf("root rotation: %v", err)
	}
	t.Logf("root generation %d in effect after %s", gen, time.Since(start).Round(100*time.Millisecond))
	var rootSecret corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-ca-root"}, &rootSecret); err != nil {
		t.Fatal(err)
	}
	newRoots := x509.NewCertPool()
	newRoot, err := certs.ParseCertificatesPEM(rootSecret.Data["tls.crt"])
	if err != nil || len(newRoot) != 1 {
		t.Fatalf("the root Secret's tls.crt: %v", err)
	}
	newRoots.AddCert(newRoot[0])
	st.waitFor(t, "both sides on certificates from the new root", func(r result) bool {
		return chainLen(r, newRoots) == 3 && chainLen(r, roots) == 0 && r.clientCA == fmt.Sprintf("%x", newRoot[0].SubjectKeyId)
	})

	// A new client (its own xDS client and stream) after the rotation:
	// the controller now serves a certificate from the new root, which
	// the application verifies with the agent's copy of weft-root-ca.
	fresh, err := xds.NewXDSResolverWithConfigForTesting(agents["frontend"].bootstrap(t))
	if err != nil {
		t.Fatal(err)
	}
	freshConn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(fresh), grpc.WithTransportCredentials(ccreds))
	if err != nil {
		t.Fatal(err)
	}
	defer freshConn.Close()
	if _, err := hello(ctx, freshConn, true); err != nil {
		t.Fatalf("a client started after the root rotation: %v", err)
	}

	ok, failed, serials, firstErr := st.stop()
	t.Logf("steady stream: %d RPCs succeeded, %d failed; the server presented %d different certificates", ok, failed, serials)
	if failed != 0 {
		t.Fatalf("%d of %d RPCs failed while certificates rotated; first: %v", failed, ok+failed, firstErr)
	}
	if serials < 4 {
		t.Fatalf("the server presented %d certificates during the stream, want at least 4 (built-in, cert-manager, built-in, new root)", serials)
	}
}

const proxylessYAML = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: greeter, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: shop}
spec: {selector: {app: greeter}, ports: [{name: grpc, port: 80, targetPort: %d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: greeter-1, namespace: shop, labels: {kubernetes.io/service-name: greeter}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: [%s], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-0, namespace: shop, labels: {app: greeter}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: greeter, automountServiceAccountToken: false, containers: [{name: app, image: greeter}]}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-0, namespace: shop, labels: {app: frontend}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: frontend, automountServiceAccountToken: false, containers: [{name: app, image: frontend}]}
`

// result is one RPC as both ends saw it.
type result struct {
	server        *x509.Certificate   // the leaf the server presented
	chain         []*x509.Certificate // its whole chain
	client        string              // the client's SPIFFE ID, as the server saw it
	clientBuiltIn bool                // the client's leaf came with an intermediate
	clientCA      string              // hex key id of the CA above the client's chain
}

// hello calls the greeter; the server answers with the client's identity
// and whether its chain carried an intermediate.
func hello(ctx context.Context, conn *grpc.ClientConn, wait bool) (result, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var p peer.Peer
	out := &wrapperspb.StringValue{}
	if err := conn.Invoke(rctx, "/weft.e2e.Greeter/Hello", &emptypb.Empty{}, out, grpc.WaitForReady(wait), grpc.Peer(&p)); err != nil {
		return result{}, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return result{}, fmt.Errorf("the RPC was not made over TLS (auth info %T)", p.AuthInfo)
	}
	f := strings.Fields(out.Value)
	if len(f) != 3 {
		return result{}, fmt.Errorf("unexpected answer %q", out.Value)
	}
	return result{server: info.State.PeerCertificates[0], chain: info.State.PeerCertificates, client: f[0], clientBuiltIn: f[1] == "2", clientCA: f[2]}, nil
}

// greeterService answers with the caller's SPIFFE ID, the length of the
// chain it presented and the key id of the CA above that chain: a service
// without generated code.
var greeterService = grpc.ServiceDesc{
	ServiceName: "weft.e2e.Greeter",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Hello",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			p, _ := peer.FromContext(ctx)
			info, ok := p.AuthInfo.(credentials.TLSInfo)
			if !ok || len(info.State.PeerCertificates) == 0 || len(info.State.PeerCertificates[0].URIs) == 0 {
				return nil, status.Error(codes.Unauthenticated, "no client certificate")
			}
			certs := info.State.PeerCertificates
			return wrapperspb.String(fmt.Sprintf("%s %d %x", certs[0].URIs[0], len(certs), certs[len(certs)-1].AuthorityKeyId)), nil
		},
	}},
}

// chainLen is the length of the server's verified chain: weft's built-in
// CA signs leaves with a per-replica intermediate (3: leaf, intermediate,
// root); cert-manager's CA Issuer over the same root signs them with the
// root itself (2). 0 when it does not verify.
func chainLen(r result, roots *x509.CertPool) int {
	inter := x509.NewCertPool()
	for _, c := range r.chain[1:] {
		inter.AddCert(c)
	}
	chains, err := r.server.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil || len(chains) == 0 {
		return 0
	}
	return len(chains[0])
}

func verifies(r result, roots *x509.CertPool) error {
	inter := x509.NewCertPool()
	for _, c := range r.chain[1:] {
		inter.AddCert(c)
	}
	_, err := r.server.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func startGreeter(t *testing.T, lis net.Listener, bootstrap []byte) *xds.GRPCServer {
	t.Helper()
	screds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{}, 1)
	srv, err := xds.NewGRPCServer(grpc.Creds(screds), xds.BootstrapContentsForTesting(bootstrap),
		// Connections last about a second, so handshakes keep happening
		// and pick up rotated certificates; in-flight RPCs finish.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Second, MaxConnectionAgeGrace: 30 * time.Second}),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				select {
				case serving <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	srv.RegisterService(&greeterService, nil)
	go func() { _ = srv.Serve(lis) }()
	select {
	case <-serving:
	case <-time.After(90 * time.Second):
		t.Fatal("the greeter never accepted its xDS listener")
	}
	return srv
}

// stream sends RPCs back to back from two callers, without waiting for a
// ready connection (a failed handshake fails the RPC), and counts.
type stream struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	firstErr error
	serials  map[string]bool
	last     result
	seen     chan result
}

func startStream(ctx context.Context, conn *grpc.ClientConn) *stream {
	ctx, cancel := context.WithCancel(ctx)
	s := &stream{cancel: cancel, serials: map[string]bool{}, seen: make(chan result, 1)}
	for w := 0; w < 2; w++ {
		s.wg.Go(func() {
			for ctx.Err() == nil {
				r, err := hello(ctx, conn, false)
				if ctx.Err() != nil {
					return // the stream's end, not a failure
				}
				if err != nil {
					s.fail.Add(1)
					s.mu.Lock()
					if s.firstErr == nil {
						s.firstErr = err
					}
					s.mu.Unlock()
				} else {
					s.ok.Add(1)
					s.mu.Lock()
					s.serials[r.server.SerialNumber.String()] = true
					s.mu.Unlock()
					select {
					case s.seen <- r:
					default:
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return s
}

// waitFor reads the stream's results until one satisfies cond.
func (s *stream) waitFor(t *testing.T, what string, cond func(result) bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case r := <-s.seen:
			if cond(r) {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s (%d RPCs ok, %d failed)", what, s.ok.Load(), s.fail.Load())
		}
	}
}

func (s *stream) stop() (ok, failed int64, serials int, firstErr error) {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok.Load(), s.fail.Load(), len(s.serials), s.firstErr
}

func setProvider(t *testing.T, ctx context.Context, env *testenv.Env, p v1alpha1.CertificateProvider) {
	t.Helper()
	mc := &v1alpha1.MeshConfig{}
	err := env.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, mc)
	if apierrors.IsNotFound(err) {
		mc = &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName}}
	} else if err != nil {
		t.Fatal(err)
	}
	mc.Spec.Certificates.Provider = p
	mc.Spec.Certificates.CertManager = nil
	if p == v1alpha1.CertificateProviderCertManager {
		// The CA Issuer signs with the mesh root, so the pinned bundle is
		// that root (weft-ca-root's ca.crt).
		mc.Spec.Certificates.CertManager = &v1alpha1.CertManagerConfig{IssuerRef: v1alpha1.IssuerReference{Name: "weft-ca", Kind: "Issuer", Group: "cert-manager.io"},
			TrustBundle: &v1alpha1.TrustBundleSource{Secret: &v1alpha1.KeyReference{Name: "weft-ca-root", Key: "ca.crt"}}}
	}
	if mc.ResourceVersion == "" {
		err = env.Client.Create(ctx, mc)
	} else {
		err = env.Client.Update(ctx, mc)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// agentProc is a running `weft agent`.
type agentProc struct {
	dir, readyAddr, rootFile string
}

func (a *agentProc) ready() error {
	body, code, err := httpGet("http://" + a.readyAddr + "/ready")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%d %s", code, body)
	}
	return err
}

func (a *agentProc) bootstrap(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dir, "grpc-bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startAgent runs `weft agent` for pod <sa>-0 with what the kubelet would
// give it: the root CA file and a token bound to the pod.
func startAgent(t *testing.T, ctx context.Context, cs *kubernetes.Clientset, sa, ip string, rootPEM []byte, xdsTLSAddr string) *agentProc {
	t.Helper()
	pod, err := cs.CoreV1().Pods("shop").Get(ctx, sa+"-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:      []string{weftxds.TokenAudience},
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	if err := os.MkdirAll(creds, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"token": []byte(tr.Status.Token), "root-cert.pem": rootPEM} {
		if err := os.WriteFile(filepath.Join(creds, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := &agentProc{dir: dir, readyAddr: freeAddr(t), rootFile: filepath.Join(creds, "root-cert.pem")}
	startProcess(t, "weft agent ("+sa+")", bin("weft"), "agent",
		"--xds-address", xdsTLSAddr, "--xds-server-name", "weft-controller.weft-system.svc",
		"--root-cert", filepath.Join(creds, "root-cert.pem"), "--token-file", filepath.Join(creds, "token"),
		"--out", filepath.Join(dir, "certs"), "--bootstrap", filepath.Join(dir, "grpc-bootstrap.json"),
		"--grpc-xds-address", appXDSTarget(xdsTLSAddr), "--refresh-interval", "1s",
		"--pod-name", sa+"-0", "--namespace", "shop", "--service-account", sa, "--pod-ips", ip, "--labels", "app="+sa,
		"--ready-address", a.readyAddr, "--log-format", "text")
	return a
}

// appXDSTarget is the xDS server the applications' bootstraps name: the
// controller's TLS port under its Service name, as in a cluster
// (weft-controller.weft-system.svc:15012), resolved by clusterDNS.
func appXDSTarget(tlsAddr string) string {
	_, port, _ := net.SplitHostPort(tlsAddr)
	return clusterDNS{}.Scheme() + ":///weft-controller.weft-system.svc:" + port
}

// clusterDNS plays the cluster's DNS for this process's gRPC clients: a
// target "weft-e2e:///<name>:<port>" reaches 127.0.0.1:<port>, while gRPC
// still verifies the server's certificate for <name>.
type clusterDNS struct{}

func init() { grpcresolver.Register(clusterDNS{}) }

func (clusterDNS) Scheme() string { return "weft-e2e" }

func (clusterDNS) Build(t grpcresolver.Target, cc grpcresolver.ClientConn, _ grpcresolver.BuildOptions) (grpcresolver.Resolver, error) {
	_, port, err := net.SplitHostPort(t.Endpoint())
	if err != nil {
		return nil, err
	}
	_ = cc.UpdateState(grpcresolver.State{Addresses: []grpcresolver.Address{{Addr: net.JoinHostPort("127.0.0.1", port)}}})
	return clusterDNS{}, nil
}

func (clusterDNS) ResolveNow(grpcresolver.ResolveNowOptions) {}
func (clusterDNS) Close()                                    {}

// proxiesAuthenticated checks the controller's /debug/proxies: how many
// connected proxies there are by "<node id> <authentication>".
func proxiesAuthenticated(debugAddr string, want map[string]int) error {
	body, code, err := httpGet("http://" + debugAddr + "/debug/proxies")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("/debug/proxies: %d %v", code, err)
	}
	var proxies []weftxds.ProxyStatus
	if err := json.Unmarshal([]byte(body), &proxies); err != nil {
		return err
	}
	got := map[string]int{}
	for _, p := range proxies {
		got[p.ID+" "+p.Auth]++
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("connected proxies %v, want %v", got, want)
	}
	return nil
}

// projectRootCA does the kubelet's part for the agents' root files: it
// keeps them equal to the weft-root-ca ConfigMap, which a root rotation
// changes, replacing each file atomically, until ctx ends.
func projectRootCA(ctx context.Context, c client.Client, files []string) {
	for ctx.Err() == nil {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "weft-root-ca"}, &cm); err == nil {
			data := []byte(cm.Data["root-cert.pem"])
			for _, f := range files {
				if cur, _ := os.ReadFile(f); !bytes.Equal(cur, data) {
					_ = os.WriteFile(f+".tmp", data, 0o600)
					_ = os.Rename(f+".tmp", f)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// listenHost listens on a non-loopback address of this machine: the API
// server refuses loopback addresses in EndpointSlices, and the gRPC server
// must serve where its EndpointSlice says.
func listenHost(t *testing.T) net.Listener {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if lis, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0")); err == nil {
				return lis
			}
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to serve on, and EndpointSlices refuse loopback addresses")
	return nil
}

// startProcess runs a binary until the test ends (SIGTERM, then wait),
// showing its output if the test failed.
func startProcess(t *testing.T, name, path string, args ...string) {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			out := logs.String()
			if len(out) > 20000 {
				out = "…" + out[len(out)-20000:]
			}
			t.Logf("%s output:\n%s", name, out)
		}
	})
}

// startCertManager runs cert-manager's own controllers (issuers, the
// internal approver, the CA issuer) for weft-system, built by
// hack/build-cert-manager.sh as certs/certmanager's tests do.
func startCertManager(t *testing.T, env *testenv.Env) {
	t.Helper()
	build := exec.Command("bash", filepath.Join(env.Root, "hack", "build-cert-manager.sh"))
	build.Env = append(os.Environ(), "WEFT_BIN_DIR="+env.BinDir)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/build-cert-manager.sh: %v\n%s", err, out)
	}
	startProcess(t, "cert-manager-controller", filepath.Join(env.BinDir, "cert-manager-controller"),
		"--kubeconfig", env.Kubeconfig, "--namespace", "weft-system",
		"--controllers", "issuers,certificaterequests-approver,certificaterequests-issuer-ca",
		"--leader-elect=false", "-v=2")
}
