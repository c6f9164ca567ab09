// Command bench measures weft and istiod side by side on the same harness
// (issue 14): one local API server, one mesh, the same simulated Delta
// sidecars (internal/testing/loadtest), each control plane started fresh
// in turn for every fleet size. It prints one table per fleet size —
// weft | istiod | istiod ÷ weft — and writes the raw report (JSON), the
// table (Markdown) and a plot (SVG) to --out.
//
// istiod is pilot-discovery built from the istio.io/istio module by
// `make bench-peer` (hack/build-istiod.sh); --weft-only skips it. Every
// time is taken on the client side, from just before the API write to the
// ACK of the resource that carries the change. bench/README.md says how
// to read the numbers; docs/design/100-bench-against-istiod.md why.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/weftmesh/weft/internal/testing/loadtest"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// Result is what --out receives as JSON: the report and how it was made.
type Result struct {
	Date, Commit, Command string
	Machine               Machine
	Profile               string
	Config                loadtest.Config
	IstiodVersion         string   `json:",omitempty"`
	IstiodArgs            []string `json:",omitempty"`
	IstiodEnv             []string `json:",omitempty"`
	Report                *loadtest.Report
}

// Machine is where it ran.
type Machine struct {
	CPUs     int
	CPUModel string
	MemTotal string
	Kernel   string
	Go       string
}

func main() {
	var cfg loadtest.Config
	var proxies, istiod, out, logs, controller string
	var large, weftOnly, scoped bool
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.BoolVar(&large, "large", false, "the large profile: 5,000 Services × 10 endpoints (50,000), 500 splits, 200 then 1,000 proxies")
	fs.IntVar(&cfg.Services, "services", 2000, "Services in the mesh, all on port 80")
	fs.IntVar(&cfg.Endpoints, "endpoints", 10, "ready endpoints (Pods) per Service")
	fs.IntVar(&cfg.Namespaces, "namespaces", 10, "namespaces the Services are spread over")
	fs.IntVar(&cfg.Splits, "splits", 200, "splits among the Services (TrafficSplit for weft, VirtualService for istiod)")
	fs.BoolVar(&scoped, "scoped", false, "scope every proxy to its own namespace on both planes (weft: weft.dev/export-to \".\" on every Service and namespace; istiod: a Sidecar in istio-system with egress \"./*\"); weight changes and new Services wait for the proxies of their namespace; the profile's name says -scoped")
	fs.BoolVar(&cfg.AltPort, "alt-port", false, "every second Service also listens on port 8080 (two common ports instead of one)")
	fs.StringVar(&proxies, "proxies", "100,500", "simulated proxies, one fleet per comma-separated count; each proxy its own workload")
	fs.IntVar(&cfg.Repeats, "repeats", 10, "weight changes to time")
	fs.IntVar(&cfg.NewServices, "new-services", 3, "new Services to time")
	fs.Float64Var(&cfg.Fraction, "fraction", 0.01, "fraction of the Services whose endpoints change in one burst")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", 20, "endpoint changes per second in the churn phase (0 skips it)")
	fs.DurationVar(&cfg.ChurnFor, "churn-for", 20*time.Second, "length of the churn phase")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "bound on every wait")
	fs.DurationVar(&cfg.MemoryWait, "memory-wait", 150*time.Second, "how long a memory reading may wait for the control plane's next garbage collection (Go forces one every 2 minutes)")
	fs.IntVar(&cfg.MemoryGCs, "memory-gcs", 2, "how many garbage collections a memory reading waits for: 2 drops what sync.Pool keeps until the second (what a quiet control plane keeps), 1 counts it")
	fs.StringVar(&cfg.HeapProfile, "heap-profile", "", "write weft's heap profile after the cold start to this file (FILE-N.pb.gz for N proxies; go tool pprof reads it)")
	fs.StringVar(&cfg.ColdCPUProfile, "cold-cpu-profile", "", "write weft's CPU profile over the first --cold-cpu-for of the cold start to this file (FILE-N.pb.gz for N proxies)")
	fs.DurationVar(&cfg.ColdCPUFor, "cold-cpu-for", 15*time.Second, "the window of --cold-cpu-profile, from just before the first stream (make it outlast the cold start)")
	fs.StringVar(&cfg.ChurnCPUProfile, "churn-cpu-profile", "", "write weft's CPU profile over the endpoint churn window to this file (FILE-N.pb.gz for N proxies; profiling adds to the churn CPU it measures)")
	fs.StringVar(&cfg.HarnessCPUProfile, "harness-cpu-profile", "", "write the harness's own CPU profile over weft's cold start to this file (FILE-N.pb.gz for N proxies): what the simulated proxies cost on the shared cores")
	fs.StringVar(&istiod, "istiod", "bin/pilot-discovery", "pilot-discovery binary (make bench-peer builds it)")
	fs.BoolVar(&weftOnly, "weft-only", false, "measure weft alone (no istiod)")
	fs.StringVar(&controller, "controller", "", "weft-controller binary (empty: go build ./cmd/weft-controller)")
	fs.StringVar(&out, "out", "bench/results", "folder for the JSON report, the Markdown table and the SVG plot (empty: none)")
	fs.StringVar(&logs, "logs", "", "file for the control planes' output (default: discarded)")
	replot := fs.String("replot", "", "rewrite the .md and .svg of a run's .json (after a change to the table or the plot), measure nothing")
	_ = fs.Parse(os.Args[1:])
	if *replot != "" {
		if err := rewrite(*replot); err != nil {
			fail(err)
		}
		return
	}
	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime
	if fs.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q: bench takes flags only", fs.Arg(0)))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	profile := profileName(set, large, scoped)
	if large {
		if !set["services"] {
			cfg.Services = 5000
		}
		if !set["splits"] {
			cfg.Splits = 500
		}
		if !set["proxies"] {
			proxies = "200,1000"
		}
	}
	for _, p := range strings.Split(proxies, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			fail(fmt.Errorf("--proxies: %q is not a number", p))
		}
		cfg.Proxies = append(cfg.Proxies, n)
		cfg.Groups = max(cfg.Groups, n) // every proxy its own workload
	}
	cfg.Groups = min(cfg.Groups, cfg.Services)
	cfg.ExportAll, cfg.Scoped, cfg.ByName, cfg.VirtualServices = !scoped, scoped, true, !weftOnly
	if err := cfg.Validate(); err != nil {
		fail(err)
	}
	cfg.Progress = os.Stderr
	if logs != "" {
		f, err := os.Create(logs)
		if err != nil {
			fail(fmt.Errorf("--logs: %w", err))
		}
		defer f.Close()
		cfg.ControllerLog = f
	}
	if err := run(cfg, profile, controller, istiod, weftOnly, out); err != nil {
		fail(err)
	}
}

// profileName names the run's profile in its results' names and headings:
// default or large, custom when a flag changed the mesh or the
// measurement (not comparable with the profile's runs), and -scoped with
// --scoped (never compared with unscoped runs of the same sizes).
func profileName(set map[string]bool, large, scoped bool) string {
	profile := "default"
	for _, f := range []string{"alt-port", "services", "endpoints", "namespaces", "splits", "proxies", "repeats", "new-services", "churn-rate", "churn-for", "memory-wait", "memory-gcs"} {
		if set[f] {
			profile = "custom"
		}
	}
	if large {
		profile = "large-" + profile
		if profile == "large-default" {
			profile = "large"
		}
	}
	if scoped {
		profile += "-scoped"
	}
	return profile
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(1)
}

func run(cfg loadtest.Config, profile, controller, istiod string, weftOnly bool, out string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	res := Result{Date: time.Now().UTC().Format(time.RFC3339), Commit: commit(root), Command: strings.Join(append([]string{"go run ./hack/bench"}, os.Args[1:]...), " "),
		Machine: machine(), Profile: profile, Config: cfg}
	planes := []loadtest.Plane{{Flavor: loadtest.Weft}}
	var crds string
	if !weftOnly {
		if !filepath.IsAbs(istiod) {
			istiod = filepath.Join(root, istiod)
		}
		if _, err := os.Stat(istiod); err != nil {
			return fmt.Errorf("--istiod: %w (run `make bench-peer` to build it, or pass --weft-only)", err)
		}
		dir, version, err := istioModule(root)
		if err != nil {
			return err
		}
		crds = filepath.Join(dir, "manifests", "charts", "base", "files", "crd-all.gen.yaml")
		res.IstiodVersion, res.IstiodArgs, res.IstiodEnv = version, loadtest.IstiodArgs("KUBECONFIG", []string{"XDS", "MONITORING", "HTTP", "HTTPS"}), loadtest.IstiodEnv
		planes = append(planes, loadtest.Plane{Flavor: loadtest.Istiod, Binary: istiod})
	}
	if controller == "" {
		dir, err := os.MkdirTemp("", "weft-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "bench: building weft-controller")
		if controller, err = loadtest.BuildController(root, dir); err != nil {
			return err
		}
	}
	planes[0].Binary = controller

	fmt.Fprintln(os.Stderr, "bench: starting etcd and kube-apiserver")
	env, err := testenv.New(testenv.Options{Progress: os.Stderr, ServiceCIDR: "10.0.0.0/16"})
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stopping the API server: %v\n", err)
		}
	}()
	if crds != "" {
		fmt.Fprintf(os.Stderr, "bench: installing Istio's CRDs from %s\n", crds)
		if err := installCRDs(ctx, env, crds); err != nil {
			return err
		}
	}
	restCfg := rest.CopyConfig(env.Config)
	restCfg.QPS, restCfg.Burst = 1000, 2000
	c, err := client.New(restCfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return err
	}
	rep, err := loadtest.Run(ctx, cfg, loadtest.Cluster{Client: c, Kubeconfig: env.Kubeconfig, Planes: planes})
	if rep == nil {
		return err
	}
	res.Report = rep
	fmt.Println()
	rep.Print(os.Stdout)
	fmt.Println()
	var table strings.Builder
	rep.PrintComparison(&table)
	fmt.Print(table.String())
	if out != "" {
		if werr := write(root, out, res, table.String()); werr != nil {
			fmt.Fprintf(os.Stderr, "bench: --out: %v\n", werr)
		}
	}
	return err
}

// rewrite reads a run's NAME.json and writes NAME.md and NAME.svg again.
func rewrite(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if res.Report == nil {
		return fmt.Errorf("%s holds no report", path)
	}
	res.Report.Config = res.Config
	var table strings.Builder
	res.Report.PrintComparison(&table)
	fmt.Print(table.String())
	base := strings.TrimSuffix(path, ".json")
	return writeFiles(filepath.Dir(base), filepath.Base(base), res, table.String(), false)
}

// write puts NAME.json, NAME.md and NAME.svg in out, NAME being the date,
// the commit and the profile.
func write(root, out string, res Result, table string) error {
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%s-%s", time.Now().UTC().Format("20060102-1504"), short(res.Commit), res.Profile)
	if res.IstiodVersion == "" {
		name += "-weft-only"
	}
	return writeFiles(out, name, res, table, true)
}

// writeFiles writes out/NAME.md, out/NAME.svg and, with withJSON,
// out/NAME.json.
func writeFiles(out, name string, res Result, table string, withJSON bool) error {
	if withJSON {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name+".json"), b, 0o644); err != nil {
			return err
		}
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# %s\n\n- date: %s\n- commit: %s\n- machine: %d CPUs (%s), %s, Linux %s, %s\n- command: `%s`\n- load average (1 min): %.2f before, %.2f after\n",
		name, res.Date, res.Commit, res.Machine.CPUs, res.Machine.CPUModel, res.Machine.MemTotal, res.Machine.Kernel, res.Machine.Go, res.Command, res.Report.LoadBefore, res.Report.LoadAfter)
	if res.IstiodVersion != "" {
		fmt.Fprintf(&md, "- istiod: istio.io/istio %s, `%s pilot-discovery %s`\n", res.IstiodVersion, strings.Join(res.IstiodEnv, " "), strings.Join(res.IstiodArgs, " "))
	}
	fmt.Fprintf(&md, "\n%s\n![plot](%s.svg)\n", table, name)
	if err := os.WriteFile(filepath.Join(out, name+".md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(out, name+".svg"))
	if err != nil {
		return err
	}
	if err := res.Report.WritePlot(f); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s.{json,md,svg}\n", filepath.Join(out, name))
	return f.Close()
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// istioModule is the folder and version of istio.io/istio as hack/istiod
// pins it (downloaded into the module cache if needed).
func istioModule(root string) (dir, version string, err error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "istio.io/istio")
	cmd.Dir = filepath.Join(root, "hack", "istiod")
	b, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m istio.io/istio in hack/istiod: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] == "" {
		cmd = exec.Command("go", "mod", "download", "istio.io/istio")
		cmd.Dir = filepath.Join(root, "hack", "istiod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go mod download istio.io/istio: %v\n%s", err, out)
		}
		return istioModule(root)
	}
	return f[0], f[1], nil
}

// installCRDs applies Istio's CRDs and waits until the API server serves
// them.
func installCRDs(ctx context.Context, env *testenv.Env, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if out, err := env.Kubectl(ctx, b, "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("kubectl apply %s: %v\n%s", path, err, out)
	}
	if out, err := env.Kubectl(ctx, nil, "wait", "--for", "condition=established", "--timeout", "2m", "crd", "--all"); err != nil {
		return fmt.Errorf("waiting for the CRDs: %v\n%s", err, out)
	}
	return nil
}

func commit(root string) string {
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(b))
	cmd = exec.Command("git", "status", "--porcelain", "--untracked-files=no")
	cmd.Dir = root
	if b, err := cmd.Output(); err == nil && len(b) > 0 {
		c += "-dirty"
	}
	return c
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
