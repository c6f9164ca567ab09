package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// countingReviews passes TokenReviews to the real API server, counting
// them.
type countingReviews struct {
	xds.TokenReviewer
	n atomic.Int32
}

func (c *countingReviews) Create(ctx context.Context, tr *authnv1.TokenReview, o metav1.CreateOptions) (*authnv1.TokenReview, error) {
	c.n.Add(1)
	return c.TokenReviewer.Create(ctx, tr, o)
}

// apiServiceAccounts asks the API server whether a ServiceAccount exists
// (weft-controller reads its informer's cache instead:
// internal/controller/trust.ServiceAccounts).
type apiServiceAccounts struct{ cs kubernetes.Interface }

func (a apiServiceAccounts) ServiceAccountExists(ctx context.Context, ns, name string) (bool, error) {
	sa, err := a.cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return sa.DeletionTimestamp == nil, nil
}

// TestConnectionAgeReauthenticates (issue 13, item 3): a stream must not
// outlive its pod or service account. PodGone and ServiceAccountGone end
// streams when weft-controller sees the deletion; the connection age
// (xds.MaxConnectionAge, 30 min) is the backstop for a revocation it does
// not see — here a StatefulSet-style pod deleted and re-created under the
// same name (a new UID: the old pod-bound token is refused by the API
// server, but the store's batch may still hold a pod of that name, so
// PodGone is not called), and a ServiceAccount deleted while the ADS is
// not told. The ADS here is told nothing: only the age ends the streams.
//
// Real parts: kube-apiserver reviews pod-bound tokens from TokenRequest;
// the server is xds.NewServer (its keepalive parameters are the ones under
// test), over TLS; the clients are gRPC-Go. The age is shortened to 15 s
// (+1 s grace) and weft's token cache to 1 s, keeping production's order
// (a minute's cache under a 30-minute age: the reconnect at the age is
// always reviewed again). 15 s, because kube-apiserver itself caches a
// successful token authentication for 10 s (its
// TokenSuccessCacheTTL): the phase-2 reconnect comes at least 0.9 × 15 s
// after the token's last successful review.
func TestConnectionAgeReauthenticates(t *testing.T) {
	const age, grace = 15 * time.Second, time.Second
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	makePod := func() *corev1.Pod {
		p, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
			Spec: corev1.PodSpec{ServiceAccountName: "web", AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod := makePod()
	tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:      []string{xds.TokenAudience},
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token

	root, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secrets := &caSecrets{t: t, root: root, mat: map[string][3][]byte{}}
	reviews := &countingReviews{TokenReviewer: cs.AuthenticationV1().TokenReviews()}
	tokens := &xds.TokenAuthenticator{Reviews: reviews}
	xds.SetTokenCacheTTL(tokens, time.Second)
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(secrets)
	ads.SetAuthenticator(xds.Chain{
		xds.CertificateAuthenticator{Roots: func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(root.Cert); return p }, ServiceAccounts: apiServiceAccounts{cs}},
		tokens,
	})
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())

	ca := testpki.NewCA(t)
	f := ca.IssueDNS(t, t.TempDir(), []string{"localhost"})
	serving, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	defer xds.SetMaxConnectionAge(age, grace)()
	srv, err := xds.NewServer("127.0.0.1:0", ads, &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequestClientCert}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(srvCtx) }()
	defer func() { stop(); <-done }()
	addr := net.JoinHostPort("localhost", strconv.Itoa(srv.Addr().(*net.TCPAddr).Port))
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	serverRoots := x509.NewCertPool()
	serverRoots.AppendCertsFromPEM(caPEM)

	// One ClientConn per credential, kept across the age's reconnects, as
	// Envoy and gRPC keep theirs.
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: serverRoots}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// open starts a stream for node web-0.shop asking for its secrets and
	// returns it with the first response (its keys) or the refusal.
	open := func(conn *grpc.ClientConn, token string) (discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, int, error) {
		sctx := ctx
		if token != "" {
			sctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
		if err != nil {
			return nil, 0, err
		}
		n := node("web-0.shop", "shop", "web")
		n.Metadata.Fields[dataplane.MetaProxyKind] = structpb.NewStringValue(dataplane.KindNameGRPC)
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resourcev3.SecretType,
			ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
			return nil, 0, err
		}
		r, err := st.Recv()
		return st, len(r.GetResources()), err
	}
	// lifetime reads st until it ends and returns how long after since.
	lifetime := func(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, since time.Time) (time.Duration, error) {
		for {
			if _, err := st.Recv(); err != nil {
				return time.Since(since), err
			}
		}
	}
	// The server cannot end a connection before 0.9 × age (gRPC's jitter
	// is ±10%); the upper bound leaves 30 s for a loaded machine.
	checkAge := func(what string, d time.Duration, err error) {
		t.Helper()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("%s: the test's deadline passed", what)
		}
		if d < age*9/10-100*time.Millisecond || d > age*11/10+grace+30*time.Second || status.Code(err) != codes.Unavailable {
			t.Fatalf("%s ended after %v with %v; want Unavailable at the connection's age (%v, +%v grace)", what, d, err, age, grace)
		}
		t.Logf("%s: ended after %v (age %v, grace %v): %v", what, d.Round(time.Millisecond), age, grace, err)
	}

	// Phase 1: a token stream and a certificate stream (with the
	// workload certificate and key the token stream was served) each live
	// one connection age, then reconnect: the token is reviewed again.
	tokenConn := dial(nil)
	tokenStart := time.Now()
	tokenSt, keys, err := open(tokenConn, token)
	if err != nil || keys != 2 {
		t.Fatalf("first token stream: %v, %d secrets; want its 2", err, keys)
	}
	id := certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
	certPEM, keyPEM, _, ok := secrets.Material(id.String())
	if !ok {
		t.Fatalf("no material was issued for %s", id)
	}
	workload, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certConn := dial(&workload)
	certStart := time.Now()
	certSt, keys, err := open(certConn, "")
	if err != nil || keys != 2 {
		t.Fatalf("certificate stream: %v, %d secrets; want its 2", err, keys)
	}
	type ended struct {
		d   time.Duration
		at  time.Time
		err error
	}
	watch := func(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, since time.Time) <-chan ended {
		ch := make(chan ended, 1)
		go func() { d, err := lifetime(st, since); ch <- ended{d, time.Now(), err} }()
		return ch
	}
	tokenEnd, certEnd := watch(tokenSt, tokenStart), watch(certSt, certStart)
	e := <-tokenEnd
	checkAge("token stream", e.d, e.err)
	before := reviews.n.Load()
	tokenStart = time.Now()
	tokenSt, keys, err = open(tokenConn, token)
	if err != nil || keys != 2 {
		t.Fatalf("token reconnect after the age: %v, %d secrets; want admitted with its 2", err, keys)
	}
	if got := reviews.n.Load() - before; got != 1 {
		t.Fatalf("the reconnect cost %d TokenReviews, want 1 (authenticated again, not from the cache)", got)
	}
	e = <-certEnd
	checkAge("certificate stream", e.d, e.err)
	certStart = time.Now()
	certSt, keys, err = open(certConn, "")
	if err != nil || keys != 2 {
		t.Fatalf("certificate reconnect after the age: %v, %d secrets; want admitted with its 2", err, keys)
	}
	tokenEnd, certEnd = watch(tokenSt, tokenStart), watch(certSt, certStart)

	// Phase 2: the pod is deleted and a new one takes its name, and the
	// ServiceAccount is deleted; nobody tells the ADS. Each stream ends at
	// its age, and its reconnect is refused with no key served (the
	// token by the API server: the service account, or the pod UID).
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if p := makePod(); p.UID == pod.UID {
		t.Fatal("the new pod has the old UID")
	}
	if err := cs.CoreV1().ServiceAccounts("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e = <-tokenEnd
	checkAge("token stream of the replaced pod", e.d, e.err)
	t.Logf("the token stream outlived its pod and service account by %v", e.at.Sub(revoked).Round(time.Millisecond))
	_, keys, err = open(tokenConn, token)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "the API server rejected its token") || keys != 0 {
		t.Fatalf("reconnect with the replaced pod's token: %v, %d secrets; want Unauthenticated from the API server's review, no secret", err, keys)
	}
	t.Log(err)

	e = <-certEnd
	checkAge("certificate stream of the deleted service account", e.d, e.err)
	t.Logf("the certificate stream outlived its service account by %v", e.at.Sub(revoked).Round(time.Millisecond))
	_, keys, err = open(certConn, "")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "service account shop/web no longer exists") || keys != 0 {
		t.Fatalf("certificate reconnect after the service account was deleted: %v, %d secrets; want PermissionDenied naming it, no secret", err, keys)
	}
	t.Log(err)
}
