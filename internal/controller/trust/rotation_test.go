package trust

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
	"github.com/weftmesh/weft/internal/controller/replicas"
	weftstore "github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// TestRootRotation runs a root rotation of the built-in CA against the
// real API server with two control-plane replicas (each a real ADS with
// its certificate Manager, trust follower and report Lease) and proxies
// that speak Delta SDS and ACK like Envoy (Envoy itself cannot run here;
// sdsProxy applies a secret when it ACKs it, as Envoy does). One proxy
// withholds its ACKs: every phase waits for it, with the count in status,
// and moves on when it ACKs. Meanwhile the leader changes, and the new one
// resumes from the phase persisted in the root Secret. The weft-root-ca
// ConfigMap (real internal/controller/trust publisher) follows each step. At every
// moment, every certificate a proxy holds verifies against every bundle a
// proxy holds; at the end only the new root is trusted and the old root's
// key is gone from the cluster. Everything of the control plane runs as
// weft-controller's ServiceAccount with config/rbac applied.
func TestRootRotation(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "weft-system"
	for _, n := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}},
	} {
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	cfg, c, cs := asController(t, env)
	store := &builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}
	oldRoot, err := store.Ensure(ctx) // internal/controller/trust does this on the leader
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName}}); err != nil {
		t.Fatal(err)
	}

	// Two replicas, each with its own proxies and its report Lease.
	w := &world{t: t}
	var drivers []*RotationDriver
	var collectors []*replicas.Collector
	var addrs []string
	for i := range 2 {
		ads := xds.NewADS(testr.New(t).WithName(fmt.Sprintf("xds-%d", i)).V(1))
		ads.SetAuthenticator(acceptAll{})
		ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
		reports := startReports(t, ctx, cs, ns, fmt.Sprintf("weft-controller-%d", i))
		collectors = append(collectors, reports.Col)
		_, f, d, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
		if err != nil {
			t.Fatal(err)
		}
		f.idlePoll = 2 * time.Second
		fctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = f.Run(fctx) }()
		t.Cleanup(func() { stop(); <-done })
		drivers = append(drivers, d)
		addrs = append(addrs, serveADS(t, ads))
	}
	// The trust-bundle publisher, nudged by the driver after each step.
	mgr, err := manager.New(cfg, manager.Options{Scheme: testenv.Scheme, Logger: logr.Discard(), Cache: weftstore.CacheOptions(cache.Options{}),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewRootPublisher(mgr, RootPublisherOptions{Namespace: ns}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(pub); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan struct{})
	go func() { defer close(mgrDone); _ = mgr.Start(mgrCtx) }()
	t.Cleanup(func() { stopMgr(); <-mgrDone })
	for _, d := range drivers {
		d.OnStep = pub.RootChanged
	}
	published := func() ([]string, error) {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: dataplane.RootCAConfigMap}, &cm); err != nil {
			return nil, err
		}
		roots, err := certs.ParseCertificatesPEM([]byte(cm.Data[RootCAKey]))
		var fps []string
		for _, r := range roots {
			fps = append(fps, certs.Fingerprint(r))
		}
		return fps, err
	}
	testkit.Eventually(t, "weft-root-ca published with the first root", func() error {
		fps, err := published()
		if err != nil || len(fps) != 1 || fps[0] != certs.Fingerprint(oldRoot.Cert) {
			return fmt.Errorf("weft-root-ca holds %v (%v)", fps, err)
		}
		return nil
	})

	leaderCtx, stepDown := context.WithCancel(ctx)
	defer stepDown()
	leaderDone := lead(leaderCtx, drivers[0], collectors[0])

	frontend := w.dial(ctx, addrs[0], "frontend-0.shop", "shop", "frontend")
	holdout := w.dial(ctx, addrs[0], "backend-0.shop", "shop", "backend")
	ledger := w.dial(ctx, addrs[1], "ledger-0.other", "other", "ledger")
	all := []*sdsProxy{frontend, holdout, ledger}
	testkit.Eventually(t, "every proxy holds a certificate and a bundle from the first root", func() error {
		for _, p := range all {
			if err := p.holdsFrom(oldRoot.Cert); err != nil {
				return err
			}
		}
		return nil
	})
	status := func() *v1alpha1.RootRotationStatus {
		var mc v1alpha1.MeshConfig
		if err := env.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
			t.Fatal(err)
		}
		return mc.Status.RootRotation
	}
	testkit.Eventually(t, "status shows the stable first root", func() error {
		if s := status(); s == nil || s.Phase != "Stable" || s.CurrentRoot.SHA256 != certs.Fingerprint(oldRoot.Cert) {
			return fmt.Errorf("status.rootRotation = %+v", s)
		}
		return nil
	})

	// The rotation, with the holdout withholding its ACKs in each phase.
	holdout.hold(true)
	gen, err := rootrotation.Request(ctx, env.Client, ns)
	if err != nil || gen != 1 {
		t.Fatalf("Request = %d, %v; want generation 1", gen, err)
	}
	if again, err := rootrotation.Request(ctx, env.Client, ns); err != nil || again != 1 {
		t.Fatalf("a second Request before the rotation ended = %d, %v; want the same generation 1", again, err)
	}
	var newRoot string
	for i, phase := range []certs.RotationPhase{certs.PhaseAddNewRoot, certs.PhaseSwitchSigning, certs.PhaseRetireOldRoot} {
		testkit.Eventually(t, string(phase)+" waits for the holdout", func() error {
			s := status()
			if s == nil || s.Phase != string(phase) || !strings.Contains(s.WaitingFor, "2 of 3 proxies have") {
				return fmt.Errorf("status.rootRotation = %+v", s)
			}
			newRoot = s.NextRoot.SHA256
			return nil
		})
		if holdout.pending() == 0 {
			t.Fatalf("%s: the holdout was sent nothing to ACK", phase)
		}
		if i == 0 {
			// AddNewRoot also waited for the published bundle, which
			// workloads verify weft-controller with.
			testkit.Eventually(t, "weft-root-ca holds both roots", func() error {
				if fps, err := published(); err != nil || len(fps) != 2 || fps[1] != newRoot {
					return fmt.Errorf("weft-root-ca during AddNewRoot holds %v (%v), want the old and the new root", fps, err)
				}
				return nil
			})
			// The leader steps down; the other replica's driver takes over
			// from the phase persisted in the root Secret.
			stepDown()
			<-leaderDone
			lead(ctx, drivers[1], collectors[1])
			testkit.Eventually(t, "the new leader keeps waiting in "+string(phase), func() error {
				if s := status(); s.Phase != string(phase) {
					return fmt.Errorf("phase %s", s.Phase)
				}
				return nil
			})
		}
		holdout.hold(phase != certs.PhaseRetireOldRoot)
		holdout.release()
	}
	var phases []string
	if err := rootrotation.Wait(ctx, env.Client, gen, func(p rootrotation.Progress) { phases = append(phases, p.Status.Phase) }); err != nil {
		t.Fatal(err)
	}
	if s := status(); s.RootGeneration != 1 || s.CurrentRoot.SHA256 != newRoot || s.NextRoot != nil {
		t.Fatalf("final status %+v, want generation 1 with root %s only", s, newRoot)
	}

	// Every proxy, and the published bundle, end with the new root alone.
	testkit.Eventually(t, "weft-root-ca holds only the new root", func() error {
		if fps, err := published(); err != nil || len(fps) != 1 || fps[0] != newRoot {
			return fmt.Errorf("weft-root-ca holds %v (%v), want only %s", fps, err, newRoot)
		}
		return nil
	})
	testkit.Eventually(t, "every proxy trusts only the new root and serves from it", func() error {
		for _, p := range all {
			if err := p.holdsOnly(newRoot); err != nil {
				return err
			}
		}
		return nil
	})
	w.mu.Lock()
	violations := w.violations
	w.mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	// The old root's key is gone: no Secret in the namespace holds the
	// old root, and the incoming root's Secret was deleted.
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	oldPEM := string(certs.EncodeCertificatesPEM([]*x509.Certificate{oldRoot.Cert}))
	for _, s := range secrets.Items {
		for k, v := range s.Data {
			if strings.Contains(string(v), oldPEM) {
				t.Errorf("Secret %s key %s still holds the old root", s.Name, k)
			}
		}
	}
	_, nextName := store.SecretNames()
	if err := c.Get(ctx, nextName, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the incoming root's Secret %s is still there (%v)", nextName, err)
	}
	st, err := store.LoadTrust(ctx)
	if err != nil || certs.Fingerprint(st.Current.Cert) != newRoot || st.Rotation.Phase != certs.PhaseStable || st.Generation != 1 {
		t.Fatalf("root Secret after the rotation: %+v, %v", st.Rotation, err)
	}
	t.Logf("status phases seen by Wait: %v", phases)
}

// world is the proxies' shared view: after every change to what a proxy
// holds, every certificate held must verify against every bundle held.
type world struct {
	t          testing.TB
	noCheck    bool // benchmarks: many proxies, no pairwise checks
	mu         sync.Mutex
	proxies    []*sdsProxy
	violations []string
}

func (w *world) check() {
	if w.noCheck {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.proxies {
		for _, b := range w.proxies {
			chain, _ := a.held()
			_, bundle := b.held()
			if chain == nil || bundle == nil {
				continue
			}
			if err := verifyChain(chain, bundle); err != nil && len(w.violations) < 10 {
				w.violations = append(w.violations, fmt.Sprintf("%s's certificate does not verify against %s's bundle: %v", a.id, b.id, err))
			}
		}
	}
}

func verifyChain(chainPEM, bundlePEM []byte) error {
	chain, err := certs.ParseCertificatesPEM(chainPEM)
	if err != nil {
		return err
	}
	roots, err := certs.ParseCertificatesPEM(bundlePEM)
	if err != nil {
		return err
	}
	b, err := certs.NewBundle(roots...)
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: b.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return err
		}
	}
	return nil
}

// sdsProxy subscribes to its two SDS secrets over Delta ADS and applies a
// response when it ACKs it, like Envoy. While holding, it leaves responses
// unanswered (an Envoy that has not applied them yet) until release.
type sdsProxy struct {
	id     string
	w      *world
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient

	mu          sync.Mutex
	holding     bool
	queue       []*discoveryv3.DeltaDiscoveryResponse
	chain, trus []byte
}

func (w *world) dial(ctx context.Context, addr, id, ns, sa string) *sdsProxy {
	w.t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: sa, dataplane.MetaLabels: map[string]any{"app": sa}})
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: id, Metadata: md}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
		w.t.Fatal(err)
	}
	p := &sdsProxy{id: id, w: w, stream: stream}
	w.mu.Lock()
	w.proxies = append(w.proxies, p)
	w.mu.Unlock()
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.holding {
				p.queue = append(p.queue, r)
				p.mu.Unlock()
				continue
			}
			p.mu.Unlock()
			p.apply(r)
		}
	}()
	return p
}

// apply takes a response's content and ACKs it.
func (p *sdsProxy) apply(r *discoveryv3.DeltaDiscoveryResponse) {
	p.mu.Lock()
	for _, res := range r.Resources {
		var s tlsv3.Secret
		if err := res.Resource.UnmarshalTo(&s); err != nil {
			continue
		}
		switch res.Name {
		case dataplane.WorkloadCertSecret:
			p.chain = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
		case dataplane.TrustBundleSecret:
			p.trus = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
		}
	}
	for _, n := range r.RemovedResources {
		switch n {
		case dataplane.WorkloadCertSecret:
			p.chain = nil
		case dataplane.TrustBundleSecret:
			p.trus = nil
		}
	}
	p.mu.Unlock()
	p.w.check()
	_ = p.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
}

func (p *sdsProxy) hold(on bool) {
	p.mu.Lock()
	p.holding = on
	p.mu.Unlock()
}

func (p *sdsProxy) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// release applies and ACKs every withheld response, in order.
func (p *sdsProxy) release() {
	p.mu.Lock()
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, r := range q {
		p.apply(r)
	}
}

func (p *sdsProxy) held() (chain, bundle []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chain, p.trus
}

func (p *sdsProxy) holdsFrom(root *x509.Certificate) error {
	chain, bundle := p.held()
	if chain == nil || bundle == nil {
		return fmt.Errorf("%s holds no certificate or no bundle yet", p.id)
	}
	b, _ := certs.NewBundle(root)
	return verifyChain(chain, b.PEM())
}

func (p *sdsProxy) holdsOnly(fp string) error {
	chain, bundle := p.held()
	roots, err := certs.ParseCertificatesPEM(bundle)
	if err != nil || len(roots) != 1 || certs.Fingerprint(roots[0]) != fp {
		return fmt.Errorf("%s trusts %d roots (%v), want only %s", p.id, len(roots), err, fp[:16])
	}
	if err := verifyChain(chain, bundle); err != nil {
		return fmt.Errorf("%s's certificate: %w", p.id, err)
	}
	return nil
}

// startReports runs the report publisher of replica name until the test
// ends (its collector runs with the replica's driver, as on a leader).
func startReports(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name string) *Reports {
	t.Helper()
	r, err := NewReports(cs, replicas.Options{Namespace: ns, Name: name}, nil, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Pub.Start(pctx) }()
	t.Cleanup(func() { stop(); <-done })
	return r
}

// lead runs a replica's leader half, the rotation driver and the report
// collector it reads, until ctx ends; the channel closes when both return.
func lead(ctx context.Context, d *RotationDriver, col *replicas.Collector) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { _ = col.Start(ctx) })
	wg.Go(func() { _ = col.Leading().Start(ctx) })
	wg.Go(func() { _ = d.Start(ctx) })
	go func() { wg.Wait(); close(done) }()
	return done
}

type acceptAll struct{}

func (acceptAll) Authenticate(context.Context, xds.NodeInfo) error { return nil }

func serveADS(t testing.TB, ads *xds.ADS) string {
	t.Helper()
	return testkit.ServeADS(t, ads).String()
}

// TestFollowerReportsBeforeServing: a replica's trust follower serves no
// secret until its (empty) trust report is in its Lease, so the leader
// cannot take a rotation step without knowing this replica exists. The
// replica's publisher is held back; its proxy gets nothing meanwhile, and
// its certificate once the report is written.
func TestFollowerReportsBeforeServing(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
	reports, err := NewReports(cs, replicas.Options{Namespace: ns, Name: "weft-controller-0"}, nil, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	_, f, _, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(fctx) }()
	t.Cleanup(func() { stop(); <-done })
	p := (&world{t: t}).dial(ctx, serveADS(t, ads), "frontend-0.shop", "shop", "frontend")

	testkit.Eventually(t, "the follower sets its first report", func() error {
		if reports.Trust.Current() == "" {
			return fmt.Errorf("no trust report set")
		}
		return nil
	})
	// Without the report written, nothing is served. (Two seconds of
	// looking: on a slow machine this may miss a regression, never invent
	// one.)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if chain, bundle := p.held(); chain != nil || bundle != nil {
			t.Fatal("the proxy was served secrets before the replica's report was written")
		}
	}
	pctx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); _ = reports.Pub.Start(pctx) }()
	t.Cleanup(func() { stopPub(); <-pubDone })
	testkit.Eventually(t, "the proxy holds a certificate and a bundle", func() error {
		if chain, bundle := p.held(); chain == nil || bundle == nil {
			return fmt.Errorf("nothing yet")
		}
		return nil
	})
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controller-0"}, &l); err != nil {
		t.Fatalf("the replica's report Lease: %v", err)
	}
	if _, ok := l.Annotations[replicas.SectionAnnotation(trustSection)]; !ok {
		t.Errorf("the report Lease has no trust section: %v", l.Annotations)
	}
}

// asController returns weft-controller's rights (config/rbac applied):
// its rest config, a watching client and a clientset.
func asController(t *testing.T, env *testenv.Env) (*rest.Config, client.WithWatch, kubernetes.Interface) {
	t.Helper()
	cfg := env.AsController(t)
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c, cs
}
