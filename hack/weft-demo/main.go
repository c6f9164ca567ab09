// Command weft-demo is the demo mesh's workload: a proxyless gRPC server
// (`weft-demo serve`) or a client that calls Services in a loop
// (`weft-demo call`), both plain gRPC-Go applications that take their
// configuration from weft over xDS (GRPC_XDS_BOOTSTRAP, written by `weft
// agent`) and their mutual TLS certificates from the agent's files. `make
// run` and the end-to-end tests start them (internal/testing/localmesh).
//
// The client exports, on its --admin address, the request statistics an
// Envoy sidecar would export for the same calls (Envoy's names and labels,
// keyed by weft's cluster names; docs/metrics.md), so `weft stat` and the
// live view read a proxyless demo and a sidecar alike.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	grpcresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/ir"
)

// Method is the one RPC the demo serves: Empty in, "<service> <pod>" out.
const Method = "/weft.demo.Demo/Call"

// TrailerService names, on every answer (failures included), the Service
// whose backend answered, so the client can attribute a failed call to the
// backend of a split that failed it.
const TrailerService = "weft-demo-service"

// TrailerPod names, on every answer, the pod that answered, so a client
// knows which endpoint its call reached (weft_demo_calls_total).
const TrailerPod = "weft-demo-pod"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "call":
		err = call(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weft-demo %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  weft-demo serve --listen IP:PORT --service NAME --pod NAME [--admin ADDR] [--fail-percent N]
  weft-demo call --target HOST:PORT [--target ...] [--rate N] [--concurrency N] [--ready-on ok|any] [--plaintext-address IP:PORT] [--admin ADDR]
Both read their xDS bootstrap from GRPC_XDS_BOOTSTRAP (written by weft agent).
`)
	os.Exit(2)
}

func init() { grpcresolver.Register(localDNS{}) }

// localDNS plays the cluster's DNS for the xDS server the bootstrap names:
// "weft-local:///<name>:<port>" reaches 127.0.0.1:<port>, while gRPC still
// verifies the server's certificate for <name>
// (weft-controller.weft-system.svc), as in a cluster.
type localDNS struct{}

// LocalScheme is the resolver scheme the launcher names in --grpc-xds-address.
const LocalScheme = "weft-local"

func (localDNS) Scheme() string { return LocalScheme }

func (localDNS) Build(t grpcresolver.Target, cc grpcresolver.ClientConn, _ grpcresolver.BuildOptions) (grpcresolver.Resolver, error) {
	_, port, err := net.SplitHostPort(t.Endpoint())
	if err != nil {
		return nil, err
	}
	_ = cc.UpdateState(grpcresolver.State{Addresses: []grpcresolver.Address{{Addr: net.JoinHostPort("127.0.0.1", port)}}})
	return localDNS{}, nil
}

func (localDNS) ResolveNow(grpcresolver.ResolveNowOptions) {}
func (localDNS) Close()                                    {}

// serve runs the gRPC server. Its listener, routes and authorization come
// from weft (xds.NewGRPCServer); it answers with its Service and pod names
// and fails --fail-percent of calls with UNAVAILABLE (changed at run time
// with POST /fail?percent=N on --admin).
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "IP:PORT to serve on (the pod's address in its EndpointSlice)")
	service := fs.String("service", "", "the Service this backend belongs to (returned to callers)")
	pod := fs.String("pod", "", "the pod's name (returned to callers)")
	admin := fs.String("admin", "", "host:port for /ready, /fail and /metrics")
	fail := fs.Int("fail-percent", 0, "share of calls to fail with UNAVAILABLE, 0-100")
	_ = fs.Parse(args)
	if *listen == "" || *service == "" || *pod == "" {
		return errors.New("--listen, --service and --pod are required")
	}
	if *fail < 0 || *fail > 100 {
		return fmt.Errorf("--fail-percent %d: give 0 to 100", *fail)
	}
	var failPercent atomic.Int64
	failPercent.Store(int64(*fail))
	served := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_demo_served_total", Help: "Calls this demo server answered, by gRPC code.",
	}, []string{"code"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(served)

	screds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	var serving atomic.Bool
	srv, err := xds.NewGRPCServer(grpc.Creds(screds),
		// Short-lived connections: clients re-resolve and handshake with
		// whatever certificate the agent's files hold, and a removed
		// endpoint's connections end soon.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 30 * time.Second, MaxConnectionAgeGrace: 10 * time.Second}),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			serving.Store(a.Mode == connectivity.ServingModeServing)
			fmt.Fprintf(os.Stderr, "weft-demo serve: %s %s %v\n", addr, a.Mode, a.Err)
		}))
	if err != nil {
		return err
	}
	answer := *service + " " + *pod
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "weft.demo.Demo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Call",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(&emptypb.Empty{}); err != nil {
					return nil, err
				}
				_ = grpc.SetTrailer(ctx, metadata.Pairs(TrailerService, *service, TrailerPod, *pod))
				if rand.IntN(100) < int(failPercent.Load()) {
					served.WithLabelValues(codes.Unavailable.String()).Inc()
					return nil, status.Errorf(codes.Unavailable, "%s failed this call on purpose (weft-demo --fail-percent %d)", *pod, failPercent.Load())
				}
				served.WithLabelValues(codes.OK.String()).Inc()
				return wrapperspb.String(answer), nil
			},
		}},
	}, nil)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *admin != "" {
		mux := adminMux(reg, func() error {
			if !serving.Load() {
				return errors.New("not serving: weft has not sent this server's listener yet")
			}
			return nil
		})
		mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				p, err := strconv.Atoi(r.URL.Query().Get("percent"))
				if err != nil || p < 0 || p > 100 {
					http.Error(w, "give ?percent=N with N from 0 to 100", http.StatusBadRequest)
					return
				}
				failPercent.Store(int64(p))
			}
			fmt.Fprintf(w, "%d\n", failPercent.Load())
		})
		if err := serveAdmin(ctx, *admin, mux); err != nil {
			return err
		}
	}
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	return srv.Serve(lis)
}

// call sends --rate calls per second to each --target until stopped, and
// exports what happened as an Envoy sidecar's cluster statistics would,
// and which pod answered each call (weft_demo_calls_total).
func call(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	var targets stringList
	fs.Var(&targets, "target", "a Service to call, NAME.NAMESPACE:PORT (repeatable)")
	rate := fs.Float64("rate", 20, "calls per second to each target")
	concurrency := fs.Int("concurrency", 1, "calls in flight at most, per target: above 1, a slow call does not hold the next ones back (for rates of hundreds per second)")
	readyOn := fs.String("ready-on", "ok", "when /ready answers 200: ok, once every target answered a call with OK; any, once a call to every target ended, whatever its code (a client that is meant to be refused)")
	admin := fs.String("admin", "", "host:port for /ready and /metrics")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of each call")
	plaintext := fs.String("plaintext-address", "", "call the one --target at this IP:PORT over plaintext, without xDS: a client outside the mesh (the address is where the Service would forward it)")
	_ = fs.Parse(args)
	if len(targets) == 0 {
		return errors.New("give at least one --target NAME.NAMESPACE:PORT")
	}
	if *plaintext != "" && len(targets) != 1 {
		return errors.New("--plaintext-address calls one --target")
	}
	if *rate <= 0 {
		return fmt.Errorf("--rate %v: give a positive number", *rate)
	}
	if *concurrency < 1 {
		return fmt.Errorf("--concurrency %d: give 1 or more", *concurrency)
	}
	if *readyOn != "ok" && *readyOn != "any" {
		return fmt.Errorf("--ready-on %q: give ok or any", *readyOn)
	}
	m := newClientMetrics()
	ccreds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var ready atomic.Int64
	for _, tg := range targets {
		host, port, err := net.SplitHostPort(tg)
		if err != nil {
			return fmt.Errorf("--target %q: %v", tg, err)
		}
		name, ns, ok := strings.Cut(host, ".")
		p, perr := strconv.Atoi(port)
		if !ok || perr != nil {
			return fmt.Errorf("--target %q: want NAME.NAMESPACE:PORT", tg)
		}
		dial, creds := "xds:///"+tg, ccreds
		if *plaintext != "" {
			dial, creds = *plaintext, insecure.NewCredentials()
		}
		conn, err := grpc.NewClient(dial, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		t := target{conn: conn, name: name, ns: ns, port: int32(p), root: ir.ClusterName(ir.ServiceKey{Namespace: ns, Name: name}, int32(p)), dial: tg, logged: &sync.Map{}}
		// One ticker per target hands out the calls; --concurrency callers
		// take them, so a tick that finds every caller busy is dropped (the
		// rate is a ceiling, as time.Ticker's).
		tokens := make(chan struct{}, *concurrency)
		wg.Go(func() {
			tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
			defer tick.Stop()
			defer close(tokens)
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		})
		var first sync.Once
		for range *concurrency {
			wg.Go(func() {
				for range tokens {
					code, done := t.call(ctx, m, *timeout)
					if done && (code == codes.OK || *readyOn == "any") {
						first.Do(func() { ready.Add(1) })
					}
				}
			})
		}
	}
	if *admin != "" {
		mux := adminMux(m.reg, func() error {
			if n := ready.Load(); n < int64(len(targets)) {
				return fmt.Errorf("%d of %d targets answered so far", n, len(targets))
			}
			return nil
		})
		if err := serveAdmin(ctx, *admin, mux); err != nil {
			return err
		}
	}
	wg.Wait()
	return nil
}

type target struct {
	conn     *grpc.ClientConn
	name, ns string
	port     int32
	root     string // the cluster of the Service called, for failures no backend claimed
	dial     string
	logged   *sync.Map // gRPC codes whose first failure was logged
}

// call makes one RPC and records it under the cluster of the backend that
// answered (its Service, from the trailer), or the called Service's own
// cluster when no backend answered (a refused connection, a denial by the
// server's authorization, a deadline). done is false when the call was cut
// short by the client stopping.
func (t target) call(ctx context.Context, m *clientMetrics, timeout time.Duration) (code codes.Code, done bool) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var trailer metadata.MD
	start := time.Now()
	err := t.conn.Invoke(rctx, Method, &emptypb.Empty{}, &wrapperspb.StringValue{}, grpc.Trailer(&trailer))
	if ctx.Err() != nil {
		return codes.Canceled, false // stopping, not a failure
	}
	cluster, service, pod := t.root, t.name, ""
	if svc := trailer.Get(TrailerService); len(svc) == 1 {
		service = svc[0]
		cluster = ir.ClusterName(ir.ServiceKey{Namespace: t.ns, Name: service}, t.port)
	}
	if p := trailer.Get(TrailerPod); len(p) == 1 {
		pod = p[0]
	}
	code = status.Code(err)
	if _, seen := t.logged.LoadOrStore(code, true); !seen && err != nil {
		// What a failing call says, once per code: the metrics count
		// codes, and the message says why (a denial, a missing route).
		fmt.Fprintf(os.Stderr, "weft-demo call: %s: first %s: %v\n", t.dial, code, err)
	}
	m.record(cluster, code, time.Since(start))
	m.calls.WithLabelValues(service, pod, code.String()).Inc()
	return code, true
}

// clientMetrics are the calls as an Envoy sidecar's cluster statistics
// (Envoy's /stats/prometheus names and default tags), so weft stat reads
// them as it reads a sidecar's; codeClass gives a call's response class.
type clientMetrics struct {
	reg           *prometheus.Registry
	total, byCode *prometheus.CounterVec
	time          *prometheus.HistogramVec
	// calls is the demo's own count: which Service and pod answered each
	// call (pod "" when none did), by gRPC code.
	calls *prometheus.CounterVec
}

func newClientMetrics() *clientMetrics {
	m := &clientMetrics{
		reg: prometheus.NewRegistry(),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_total", Help: "Calls to the cluster (as Envoy's cluster.<name>.upstream_rq_total).",
		}, []string{"envoy_cluster_name"}),
		byCode: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_xx", Help: "Calls to the cluster by response code class (as Envoy's upstream_rq_<N>xx).",
		}, []string{"envoy_response_code_class", "envoy_cluster_name"}),
		// Envoy's default histogram buckets, in milliseconds.
		time: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envoy_cluster_upstream_rq_time", Help: "Call latency in milliseconds (as Envoy's upstream_rq_time).",
			Buckets: []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000},
		}, []string{"envoy_cluster_name"}),
	}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_demo_calls_total", Help: "Calls this demo client made, by the Service and pod that answered (pod empty when none did: a refused connection, a deadline, no route) and the gRPC code.",
	}, []string{"service", "pod", "code"})
	m.reg.MustRegister(m.total, m.byCode, m.time, m.calls)
	return m
}

func (m *clientMetrics) record(cluster string, code codes.Code, d time.Duration) {
	m.total.WithLabelValues(cluster).Inc()
	m.byCode.WithLabelValues(codeClass(code), cluster).Inc()
	m.time.WithLabelValues(cluster).Observe(float64(d.Microseconds()) / 1000)
}

// codeClass is a call's response class: "2" for OK, "5" for any other
// gRPC status. gRPC carries errors in its status, not in an HTTP status
// (a sidecar would count most as 200), and a caller sees every non-OK call
// as failed — as Linkerd's gRPC response classifier does — so weft stat's
// success rate (not 5xx) is the share of OK calls, and a denial shows.
func codeClass(c codes.Code) string {
	if c == codes.OK {
		return "2"
	}
	return "5"
}

func adminMux(reg *prometheus.Registry, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func serveAdmin(ctx context.Context, addr string, mux *http.ServeMux) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
