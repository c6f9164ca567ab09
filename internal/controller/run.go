package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/internal/controller/injectcheck"
	"github.com/weftmesh/weft/internal/controller/replicas"
	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/internal/controller/trust"
	"github.com/weftmesh/weft/internal/controller/webhookserver"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/webhook"
	"github.com/weftmesh/weft/xds"
)

// Run starts the control plane and blocks until ctx is done or a component
// fails. It returns nil after a clean shutdown.
func Run(ctx context.Context, o Options, log logr.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	registerBuildInfo(ctrlmetrics.Registry)

	// Bind both listeners before anything else starts, so that a port in
	// use fails the process at once with the flag to change.
	ads := xds.NewADS(log.WithName("xds"))
	// Plaintext xDS does not authenticate: configuration only, never
	// secrets, and only when the operator asks for it (--xds-address;
	// docs/design/070). The TLS port authenticates.
	var xdsServer *xds.Server
	if o.XDSAddress != "" {
		ads.SetAnonymousLimits(o.XDSPlaintextMaxStreams, o.XDSPlaintextMaxGroups)
		xdsServer, err = xds.NewServer(o.XDSAddress, ads.Anonymous(), nil, log.WithName("xds"))
		if err != nil {
			return fmt.Errorf("--xds-address: %w", err)
		}
		log.Info("the anonymous plaintext xDS port is on (--xds-address): any client that reaches it can read the configuration of any identity it claims", "address", xdsServer.Addr().String())
	}
	serving := &trust.ServingCert{}
	// Client certificates are asked for, not required (sidecars send
	// tokens), and verified by xds.CertificateAuthenticator per stream.
	xdsTLSServer, err := xds.NewServer(o.XDSTLSAddress, ads, &tls.Config{GetCertificate: serving.GetCertificate, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}, log.WithName("xds-tls"))
	if err != nil {
		return fmt.Errorf("--xds-tls-address: %w", err)
	}
	monLis, err := net.Listen("tcp", o.MonitoringAddress)
	if err != nil {
		return fmt.Errorf("--monitoring-address: %w", err)
	}
	debugLis, err := net.Listen("tcp", o.DebugAddress)
	if err != nil {
		_ = monLis.Close()
		return fmt.Errorf("--debug-address: %w", err)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	store.MustAddToScheme(scheme)
	// CertificateRequests, when MeshConfig selects cert-manager.
	utilruntime.Must(certmanagerv1.AddToScheme(scheme))
	mgr, err := manager.New(cfg, manager.Options{
		Scheme: scheme,
		Logger: log,
		// Cache only what the translator reads (Pods are trimmed).
		Cache: store.CacheOptions(cache.Options{}),
		// weft serves metrics and probes on its own monitoring listener.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// weft elects its leader itself (leaderTerms): controller-runtime's
		// election exits the process when the Lease cannot be renewed,
		// which dropped every xDS stream of the leader during an API
		// server outage (docs/design/077).
		LeaderElection:          false,
		GracefulShutdownTimeout: ptr(15 * time.Second),
	})
	if err != nil {
		_ = monLis.Close()
		_ = debugLis.Close()
		return fmt.Errorf("creating manager: %w", err)
	}

	st, err := store.New(mgr, log.WithName("store"))
	if err != nil {
		_ = monLis.Close()
		return err
	}
	// Proxies' zones come from the cluster (Pod -> Node), never from their
	// node metadata (docs/design/171).
	ads.SetLocator(st.Locality)
	// The CA's root Secret is read directly, not through an informer that
	// would cache every Secret of the cluster.
	direct, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// Every replica's one report Lease: its policies' distribution and its
	// root rotation facts; the leader reads everyone's.
	name, err := reportName()
	if err != nil {
		return err
	}
	loop := &meshLoop{ads: ads, log: log.WithName("translator")}
	reports, err := trust.NewReports(cs, replicas.Options{Namespace: o.LeaderElectionNamespace, Name: name}, loop.snapshot, log.WithName("replicas"))
	if err != nil {
		return err
	}
	loop.changed = reports.Pub.Changed
	log.Info("reporting this replica's policy distribution and root rotation facts", "lease", o.LeaderElectionNamespace+"/"+name)
	// The names sidecars' bootstraps dial (weft-controller.<ns>.svc:15012).
	svc := "weft-controller." + o.LeaderElectionNamespace
	dnsNames := []string{svc + ".svc", svc + ".svc.cluster.local", svc, "weft-controller"}
	certManager, follower, rotation, err := trust.New(ads, direct, o.LeaderElectionNamespace, translator.DefaultTrustDomain, dnsNames, serving, reports, log.WithName("certs"))
	if err != nil {
		return err
	}
	// A deleted ServiceAccount's identity gets no certificate, and its
	// still-valid workload certificates authenticate nobody (issue 13,
	// 075): both look it up in the store's metadata-only informer.
	serviceAccounts := trust.ServiceAccounts{Reader: mgr.GetCache()}
	certManager.SetAdmit(serviceAccounts.Admit)
	// TokenReviews get their own client: client-go's default 5 QPS /
	// burst 10 made 2,500 sidecars re-authenticating after a leader loss
	// take about 8 minutes (issue 13), and must not compete with the
	// informers' and status writer's budget.
	reviewCfg := rest.CopyConfig(cfg)
	reviewCfg.QPS, reviewCfg.Burst = tokenReviewQPS, tokenReviewBurst
	reviews, err := kubernetes.NewForConfig(reviewCfg)
	if err != nil {
		return err
	}
	if o.XDSAuth == "token" {
		// A workload certificate (proxyless gRPC, from weft agent's files),
		// verified against the bundle proxies are given now; else a token.
		ads.SetAuthenticator(xds.Chain{
			xds.CertificateAuthenticator{Roots: func() *x509.CertPool { return follower.Bundle().Pool() }, ServiceAccounts: serviceAccounts},
			&xds.TokenAuthenticator{Reviews: reviews.AuthenticationV1().TokenReviews()},
		})
	} else {
		log.Info("xDS authentication is off (--xds-auth=none): any client can claim any proxy; no secrets are served. Development only.")
	}
	// A recovered panic (translation, a group's build) is also an Event
	// on this replica's report Lease, which `kubectl get events -n
	// weft-system` shows beside the replica's name.
	events := mgr.GetEventRecorder("weft-controller")
	replicaRef := &corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: o.LeaderElectionNamespace, Name: name}
	ads.OnPanic(func(stage, group string, v any) {
		events.Eventf(replicaRef, nil, corev1.EventTypeWarning, "Panic", stage,
			"%.1024s", fmt.Sprintf("recovered a panic in %s %s (a weft bug; proxies keep their last good configuration): %v", stage, group, v))
	})
	loop.writer = status.New(mgr, loop, log.WithName("status"), status.Options{Peers: reports.Col})
	ads.OnAck(loop.acked)

	webhookServer, err := webhookserver.New(mgr, webhookserver.Options{
		Address: o.WebhookAddress, Namespace: o.LeaderElectionNamespace,
		Injector: webhook.Options{ProxyImage: o.ProxyImage, InitImage: o.InitImage, AgentImage: o.AgentImage},
	}, log.WithName("webhook"))
	if err != nil {
		return fmt.Errorf("--webhook-address: %w", err)
	}
	rootCA, err := trust.NewRootPublisher(mgr, trust.RootPublisherOptions{Namespace: o.LeaderElectionNamespace}, log.WithName("rootca"))
	if err != nil {
		return err
	}
	rotation.OnStep = rootCA.RootChanged
	rotation.Events = events // a phase forced past its timeout names the proxies
	// The leader's work runs in terms of holding the Lease (leader.go);
	// everything else on every replica.
	lm := leaderAware{Manager: mgr}
	if o.LeaderElection {
		lm.terms = newLeaderTerms(cs, o.LeaderElectionNamespace, log.WithName("leader"))
	}
	var synced atomic.Bool
	checks := []error{
		addIf(lm, xdsServer != nil, func() manager.Runnable { return xdsServer }),
		lm.Add(xdsTLSServer),
		lm.Add(webhookServer),                      // every replica
		lm.Add(webhookServer.CABundleReconciler()), // leader
		lm.Add(rootCA),                             // leader
		// Pods that came up without the sidecar while the webhook was away.
		lm.Add(injectcheck.New(mgr, log.WithName("injectcheck"))), // leader
		lm.Add(nonLeader(func(ctx context.Context) error { return loop.run(ctx, st) })),
		lm.Add(loop.writer),
		reports.Add(lm, loop.writer), // every replica reports; the leader reads everyone's
		lm.Add(nonLeader(follower.Run)),
		lm.Add(rotation), // leader: root rotation (docs/design/020)
		lm.Add(&monitoringServer{lis: debugLis, log: log.WithName("debug"), handler: debugMux(ads.DebugHandler())}),
		lm.Add(nonLeader(func(ctx context.Context) error {
			if mgr.GetCache().WaitForCacheSync(ctx) {
				synced.Store(true)
			}
			return nil
		})),
		// Leader-only work, in every term (leader.go).
		lm.Add(manager.RunnableFunc(func(ctx context.Context) error {
			log.Info("elected leader", "lease", o.LeaderElectionNamespace+"/"+LeaseName)
			<-ctx.Done()
			return nil
		})),
		lm.Add(&monitoringServer{lis: monLis, log: log.WithName("monitoring"), handler: monitoringMux(map[string]healthz.Checker{
			"xds":             func(*http.Request) error { return xdsTLSServer.Ready() },
			"xds-certificate": func(*http.Request) error { return serving.Ready() },
			"informers": func(*http.Request) error {
				if !synced.Load() {
					return errors.New("informer caches have not synced")
				}
				return nil
			},
			"webhook": func(*http.Request) error { return webhookServer.Ready() },
		})}),
	}
	if lm.terms != nil {
		checks = append(checks, mgr.Add(lm.terms))
	}
	if err := errors.Join(checks...); err != nil {
		return err
	}
	log.Info("starting weft-controller", "version", version.Get().String(), "xds-tls", xdsTLSServer.Addr().String(), "monitoring", monLis.Addr().String())
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// tokenReviewQPS and tokenReviewBurst: a storm of 2,500 sidecars is
// reviewed in about 12 s (500 at once, then 200 a second); the API server's
// TokenReview is cheap (a signature check and, for bound tokens, a pod
// lookup from its cache). xds.MaxConcurrentTokenReviews bounds what is in
// flight, xds.PeerReviewBurst what one address may ask.
const (
	tokenReviewQPS   = 200
	tokenReviewBurst = 500
)

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if kubeconfig != "" {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		return nil, fmt.Errorf("no cluster to connect to (not in a cluster, no $KUBECONFIG, no ~/.kube/config): pass --kubeconfig: %w", err)
	}
	cfg.UserAgent = "weft-controller/" + version.Version
	return cfg, nil
}

// registerBuildInfo exports weft_build_info, the conventional constant-1
// gauge whose labels say which build is running.
func registerBuildInfo(reg prometheus.Registerer) {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "weft_build_info",
		Help:        "A constant 1 labelled with the version, VCS revision and Go version of the running weft-controller.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "go_version": v.GoVersion},
	})
	g.Set(1)
	// Registering twice (Run called again in one process, as tests do) is
	// harmless: the first gauge already says the same thing.
	_ = reg.Register(g)
}

// debugMux serves the xDS debug endpoints and Go's profiles
// (/debug/pprof/: heap, CPU, goroutines), which is how the controller's
// memory per connected proxy is found out (hack/bench --heap-profile).
// The debug listener is for operators on the controller's own host
// (localhost by default, --debug-address): a profile shows no keys, but
// the config dump shows every proxy's configuration.
func debugMux(xdsDebug http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/debug/", xdsDebug)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func monitoringMux(ready map[string]healthz.Checker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(ctrlmetrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", http.StripPrefix("/healthz", &healthz.Handler{Checks: map[string]healthz.Checker{"ping": healthz.Ping}}))
	mux.Handle("/healthz/", http.StripPrefix("/healthz", &healthz.Handler{Checks: map[string]healthz.Checker{"ping": healthz.Ping}}))
	mux.Handle("/readyz", http.StripPrefix("/readyz", &healthz.Handler{Checks: ready}))
	mux.Handle("/readyz/", http.StripPrefix("/readyz", &healthz.Handler{Checks: ready}))
	return mux
}

// monitoringServer serves the monitoring mux on every replica.
type monitoringServer struct {
	lis     net.Listener
	handler http.Handler
	log     logr.Logger
}

func (m *monitoringServer) NeedLeaderElection() bool { return false }

func (m *monitoringServer) Start(ctx context.Context) error {
	srv := &http.Server{Handler: m.handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(m.lis) }()
	m.log.Info("serving metrics and probes", "address", m.lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("monitoring: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// addIf adds the runnable made by r when cond holds.
func addIf(mgr manager.Manager, cond bool, r func() manager.Runnable) error {
	if !cond {
		return nil
	}
	return mgr.Add(r())
}

// nonLeader runs fn on every replica, leader or not.
type nonLeader func(context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }
func (f nonLeader) NeedLeaderElection() bool        { return false }

func ptr[T any](v T) *T { return &v }
