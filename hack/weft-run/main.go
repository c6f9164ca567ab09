// Command weft-run is `make run`: weft's embedded default on one machine,
// carrying traffic.
//
// It starts a local etcd and kube-apiserver from bin/ in a temporary
// folder, registers weft's injection webhook and starts weft-controller
// against it (two replicas, as config/default runs), applies the samples
// the demo runs on (MeshConfig and the canary example), and runs it with real
// proxyless gRPC workloads (internal/testing/localmesh: the launcher the
// end-to-end tests use). Then it shows a live view of the calls and the
// policies until Ctrl-C (or SIGTERM), which stops every process it started
// and removes the temporary folder.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

func main() {
	var o options
	flag.StringVar(&o.xds, "xds-address", "127.0.0.1:15010", "host:port for weft-controller's plaintext xDS server")
	flag.StringVar(&o.xdsTLS, "xds-tls-address", "127.0.0.1:15012", "host:port standing for the weft-controller Service's authenticated xDS port (the workloads connect here)")
	flag.StringVar(&o.mon, "monitoring-address", "127.0.0.1:9090", "host:port for /metrics, /healthz and /readyz")
	flag.StringVar(&o.debug, "debug-address", "127.0.0.1:15014", "host:port for /debug/proxies and /debug/config_dump")
	flag.StringVar(&o.tmpParent, "tmp-dir", "", "parent of the temporary folder (default: the system's)")
	flag.StringVar(&o.binDir, "bin-dir", "", "folder with weft-controller, weft and weft-demo (default: the repository's bin/, which 'make build' fills)")
	flag.IntVar(&o.replicas, "replicas", 2, "weft-controller replicas (config/default runs two; the flags above are the first one's addresses)")
	flag.BoolVar(&o.demo, "demo", true, "run the canary sample's workloads (proxyless gRPC) and show their calls")
	flag.StringVar(&o.view, "view", "auto", "live view: on, off, or auto (on when the output is a terminal)")
	flag.DurationVar(&o.every, "view-interval", time.Second, "how often the live view refreshes")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "weft-run: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	xds, xdsTLS, mon, debug, tmpParent, binDir, view string
	demo                                             bool
	replicas                                         int
	every                                            time.Duration
}

func run(o options) error {
	switch o.view {
	case "on", "off", "auto":
	default:
		return fmt.Errorf("--view %q: give on, off or auto", o.view)
	}
	if o.every <= 0 {
		return fmt.Errorf("--view-interval %v: give a positive duration such as 1s", o.every)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.binDir == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return err
		}
		o.binDir = filepath.Join(root, "bin")
	}
	for _, b := range []string{"weft-controller", "weft", "weft-demo"} {
		if _, err := os.Stat(filepath.Join(o.binDir, b)); err != nil {
			return fmt.Errorf("%s: %v (run 'make build')", b, err)
		}
	}
	dir, err := os.MkdirTemp(o.tmpParent, "weft-run-")
	if err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "weft-run: removing %s: %v\n", dir, err)
		}
	}()

	m, err := localmesh.Start(ctx, localmesh.Options{
		Dir: dir, BinDir: o.binDir, Progress: os.Stderr, BuildProgress: os.Stderr,
		XDSTLSAddress: o.xdsTLS, XDSAddress: o.xds, MonitoringAddress: o.mon, DebugAddress: o.debug,
		Replicas: o.replicas,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "weft-run: stopping the workloads, weft-controller, etcd and kube-apiserver")
		if err := m.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "weft-run: %v\n", err)
		}
	}()

	out, err := m.ApplyDemoSamples(ctx)
	if err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, out)
	var demo *localmesh.Demo
	if o.demo {
		if demo, err = m.StartDemo(ctx); err != nil {
			return err
		}
	}

	deny := filepath.Join(dir, "deny-frontend-to-catalog.yaml")
	if err := os.WriteFile(deny, []byte(denyYAML), 0o644); err != nil {
		return err
	}
	c := m.Controllers()[0]
	kubectl := filepath.Join(m.Env.BinDir, "kubectl")
	kc := kubectl + " --kubeconfig " + m.Env.Kubeconfig
	// No kubelet here serves port-forwards: the weft commands that read the
	// replicas' debug endpoints get their addresses (--address).
	var debug []string
	for _, r := range m.Controllers() {
		debug = append(debug, r.Debug)
	}
	weft := filepath.Join(o.binDir, "weft") + " --kubeconfig " + m.Env.Kubeconfig
	addrs := " --address " + strings.Join(debug, " --address ")
	fmt.Printf(`
weft is ready (%d weft-controller replicas).
  xDS (gRPC ADS):  %s (plaintext), %s (TLS, the workloads' port)
  metrics:         http://%s/metrics   (health: /healthz, /readyz)
  debug:           http://%s/debug/proxies
  kubeconfig:      %s
  logs:            %s
  check it:        %s check%s
  its proxies:     %s proxy-status%s
`, len(debug), c.XDS, m.XDSTLSAddress, c.Monitoring, c.Debug, m.Env.Kubeconfig, m.LogDir(), weft, addrs, weft, addrs)
	if demo != nil {
		fmt.Printf(`The canary sample runs: frontend calls checkout (90%% v1, 10%% v2) and catalog over mTLS.
%s
Try, in another terminal:
  %s stat -n shop --metrics-url %s --interval 5s   # the view's numbers; add --watch
  %s -n shop patch trafficsplit checkout --type=json -p '[{"op":"replace","path":"/spec/backends/0/weight","value":50},{"op":"replace","path":"/spec/backends/1/weight","value":50}]'
  %s apply -f %s   # calls to catalog fail; delete -f to undo
  %s -n shop get trafficsplit,retrypolicy,authpolicy
  %s run demo -n shop --image=nginx   # injected: %s -n shop get pod demo -o yaml
`, demo.Describe(), filepath.Join(o.binDir, "weft")+" --kubeconfig "+m.Env.Kubeconfig, demo.Frontend.MetricsURL(), kc, kc, deny, kc, kc, kc)
	} else {
		fmt.Printf("Try:\n  %s get weft -A\n", kc)
	}
	fmt.Printf("Press Ctrl-C to stop everything and remove %s.\n", dir)

	watch := make(chan error, 1)
	if demo != nil && (o.view == "on" || (o.view == "auto" && isTerminal(os.Stdout))) {
		v := &view{m: m, urls: []string{demo.Frontend.MetricsURL()}, every: o.every, clear: isTerminal(os.Stdout), out: os.Stdout}
		go func() { watch <- v.run(ctx) }()
	}
	exits := []<-chan struct{}{}
	for _, c := range m.Controllers() {
		exits = append(exits, c.Exited())
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr)
		return nil
	case <-exits[0]:
		return fmt.Errorf("weft-controller exited: %v (its log: %s)", m.Controllers()[0].Err(), m.Controllers()[0].LogPath)
	case err := <-watch:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return fmt.Errorf("the live view: %w", err)
	}
}

// denyYAML is an AuthPolicy a person applies to watch the frontend's
// calls to catalog be refused (PERMISSION_DENIED from catalog's server).
const denyYAML = `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata:
  name: deny-frontend-to-catalog
  namespace: shop
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: catalog
  action: Deny
  rules:
  - from:
      serviceAccounts:
      - shop/frontend
`

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
