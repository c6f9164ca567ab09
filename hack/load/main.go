// Command load measures weft-controller under load: it creates a mesh of
// Services, EndpointSlices, Pods and a TrafficSplit in a real API server
// (its own, or --kubeconfig's), runs the real weft-controller binary, and
// connects simulated Delta xDS proxies that ACK like Envoy. It prints how
// long a fleet takes to hold a full configuration, how fast a weight change
// and endpoint changes reach every proxy (API write → ACK), who receives a
// change to 1% of the Services, and the controller's memory per proxy.
// The logic is internal/testing/loadtest; README.md has the numbers.
// hack/bench runs the same harness against weft and istiod side by side.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testing/loadtest"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

func main() {
	var cfg loadtest.Config
	var proxies, kubeconfig, controller, controllerLog, jsonOut string
	// A flag set of its own: controller-runtime registers a global
	// --kubeconfig of its own.
	flag := flag.NewFlagSet("load", flag.ExitOnError)
	flag.IntVar(&cfg.Services, "services", 2000, "Services in the mesh")
	flag.IntVar(&cfg.Endpoints, "endpoints", 10, "ready endpoints (meshed Pods) per Service")
	flag.IntVar(&cfg.Namespaces, "namespaces", 100, "namespaces the Services are spread over")
	flag.BoolVar(&cfg.ExportAll, "export-all", false, "export every Service to every namespace (every proxy receives every Service, as in Istio without Sidecar scoping)")
	flag.BoolVar(&cfg.Scoped, "scoped", false, "scope every proxy to its own namespace (weft.dev/export-to \".\" on every Service and namespace; needs --splits): weight changes and new Services wait for the proxies of their namespace")
	flag.IntVar(&cfg.Splits, "splits", 0, "TrafficSplits among the port-80 Services (needs --export-all or --scoped); 0: one split between global and global-next on port 8000")
	flag.BoolVar(&cfg.AltPort, "alt-port", false, "every second Service also listens on port 8080")
	flag.BoolVar(&cfg.ByName, "by-name", false, "proxies subscribe to endpoints and routes by name, as Envoy does (default: every type as a wildcard)")
	flag.IntVar(&cfg.NewServices, "new-services", 0, "new Services to time until every proxy that sees them (all with --export-all, else those of their namespace) holds a cluster and a route for it")
	flag.StringVar(&proxies, "proxies", "100,1000", "simulated proxies, one fleet (and a fresh controller) per comma-separated count")
	flag.IntVar(&cfg.Groups, "groups", 100, "distinct workloads (namespace, service account, labels) per fleet; replicas of one share a configuration")
	flag.IntVar(&cfg.Conns, "conns", 0, "gRPC connections the proxies' streams share (0: one per proxy, as Envoys have)")
	flag.IntVar(&cfg.Repeats, "repeats", 10, "TrafficSplit weight changes to time")
	flag.Float64Var(&cfg.Fraction, "fraction", 0.01, "fraction of the Services whose endpoints change in one burst")
	flag.Float64Var(&cfg.ChurnRate, "churn-rate", 20, "endpoint changes per second in the churn phase (0 skips it)")
	flag.DurationVar(&cfg.ChurnFor, "churn-for", 30*time.Second, "length of the churn phase")
	flag.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "bound on every wait")
	flag.DurationVar(&cfg.MemoryWait, "memory-wait", 150*time.Second, "how long a memory reading may wait for the controller's next garbage collection (Go forces one every 2 minutes); 0 reads at once, garbage included")
	flag.IntVar(&cfg.MemoryGCs, "memory-gcs", 2, "how many garbage collections a memory reading waits for: 2 drops what sync.Pool keeps until the second (what a quiet controller keeps), 1 counts it")
	flag.StringVar(&cfg.HeapProfile, "heap-profile", "", "write weft's heap profile after the cold start to this file (FILE-N.pb.gz for N proxies; go tool pprof reads it)")
	flag.StringVar(&cfg.ColdCPUProfile, "cold-cpu-profile", "", "write weft's CPU profile over the first --cold-cpu-for of the cold start to this file (FILE-N.pb.gz for N proxies)")
	flag.DurationVar(&cfg.ColdCPUFor, "cold-cpu-for", 15*time.Second, "the window of --cold-cpu-profile, from just before the first stream (make it outlast the cold start)")
	flag.StringVar(&cfg.ChurnCPUProfile, "churn-cpu-profile", "", "write weft's CPU profile over the endpoint churn window to this file (FILE-N.pb.gz for N proxies; profiling adds to the churn CPU it measures)")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "cluster to use (it must have weft's CRDs and no namespaces named like the tool's); empty starts a local etcd and kube-apiserver from bin/")
	flag.StringVar(&controller, "controller", "", "weft-controller binary (empty: go build ./cmd/weft-controller into a temporary folder)")
	flag.StringVar(&controllerLog, "controller-log", "", "file for the controller's output (default: discarded)")
	flag.StringVar(&jsonOut, "json", "", "also write the report as JSON to this file")
	_ = flag.Parse(os.Args[1:]) // ExitOnError
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q: load takes flags only", flag.Arg(0)))
	}
	for _, p := range strings.Split(proxies, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			fail(fmt.Errorf("--proxies: %q is not a number: write counts separated by commas, such as 100,1000", p))
		}
		cfg.Proxies = append(cfg.Proxies, n)
	}
	if err := cfg.Validate(); err != nil {
		fail(err)
	}
	cfg.Progress = os.Stderr
	if controllerLog != "" {
		f, err := os.Create(controllerLog)
		if err != nil {
			fail(fmt.Errorf("--controller-log: %w", err))
		}
		defer f.Close()
		cfg.ControllerLog = f
	}
	if err := run(cfg, kubeconfig, controller, jsonOut); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "load: %v\n", err)
	os.Exit(1)
}

func run(cfg loadtest.Config, kubeconfig, controller, jsonOut string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if controller == "" {
		dir, err := os.MkdirTemp("", "weft-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "load: building weft-controller")
		if controller, err = loadtest.BuildController(root, dir); err != nil {
			return err
		}
	}
	var restCfg *rest.Config
	if kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "load: starting etcd and kube-apiserver")
		// A /16 of Service addresses: envtest's default /24 holds 254.
		env, err := testenv.New(testenv.Options{Progress: os.Stderr, ServiceCIDR: "10.0.0.0/16"})
		if err != nil {
			return err
		}
		defer func() {
			if err := env.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "load: stopping the API server: %v\n", err)
			}
		}()
		restCfg, kubeconfig = env.Config, env.Kubeconfig
	} else if restCfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = 1000, 2000 // the mesh is tens of thousands of objects
	c, err := client.New(restCfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return err
	}
	rep, err := loadtest.Run(ctx, cfg, loadtest.Cluster{Client: c, Kubeconfig: kubeconfig, Controller: controller})
	if rep != nil {
		fmt.Println()
		rep.Print(os.Stdout)
		if jsonOut != "" {
			b, jerr := json.MarshalIndent(rep, "", "  ")
			if jerr == nil {
				jerr = os.WriteFile(jsonOut, b, 0o644)
			}
			if jerr != nil {
				fmt.Fprintf(os.Stderr, "load: --json: %v\n", jerr)
			}
		}
	}
	return err
}
