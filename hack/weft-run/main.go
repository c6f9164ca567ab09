// Command weft-run is `make run`: weft's embedded default on one machine.
//
// It starts a local etcd and kube-apiserver from bin/ in a temporary folder,
// installs weft's CRDs (and cert-manager's and Gateway API's), applies
// config/samples, starts bin/weft-controller against that API server, and
// prints where everything is. Ctrl-C (or SIGTERM) stops every process it
// started and removes the temporary folder.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

func main() {
	xdsAddr := flag.String("xds-address", "127.0.0.1:15010", "host:port for weft-controller's xDS server")
	monAddr := flag.String("monitoring-address", "127.0.0.1:9090", "host:port for /metrics, /healthz and /readyz")
	debugAddr := flag.String("debug-address", "127.0.0.1:15014", "host:port for /debug/proxies and /debug/config_dump")
	webhookAddr := flag.String("webhook-address", "127.0.0.1:9443", "host:port for the injection webhook (HTTPS)")
	xdsTLSAddr := flag.String("xds-tls-address", "127.0.0.1:15012", "host:port for weft-controller's xDS server over TLS")
	tmpParent := flag.String("tmp-dir", "", "parent of the temporary folder (default: the system's)")
	controller := flag.String("controller", "", "weft-controller binary (default: bin/weft-controller)")
	flag.Parse()
	if err := run(*xdsAddr, *xdsTLSAddr, *monAddr, *debugAddr, *webhookAddr, *tmpParent, *controller); err != nil {
		fmt.Fprintf(os.Stderr, "weft-run: %v\n", err)
		os.Exit(1)
	}
}

func run(xdsAddr, xdsTLSAddr, monAddr, debugAddr, webhookAddr, tmpParent, controller string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp(tmpParent, "weft-run-")
	if err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "weft-run: removing %s: %v\n", dir, err)
		}
	}()

	say("starting etcd and kube-apiserver in %s", dir)
	env, err := testenv.New(testenv.Options{Dir: dir, Progress: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping etcd and kube-apiserver")
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "weft-run: %v\n", err)
		}
	}()

	say("creating namespace weft-system and applying config/samples")
	if _, err := env.Kubectl(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n"), "apply", "-f", "-"); err != nil {
		return err
	}
	if samples := filepath.Join(env.Root, "config", "samples"); hasKustomization(samples) {
		out, err := env.Kubectl(ctx, nil, "apply", "-k", samples)
		if err != nil {
			return err
		}
		fmt.Fprint(os.Stderr, out)
	}

	if controller == "" {
		controller = filepath.Join(env.BinDir, "weft-controller")
	}
	say("starting weft-controller")
	ctrl := exec.Command(controller,
		"--kubeconfig", env.Kubeconfig,
		"--xds-address", xdsAddr,
		"--monitoring-address", monAddr,
		"--debug-address", debugAddr,
		"--webhook-address", webhookAddr,
		"--xds-tls-address", xdsTLSAddr,
		"--leader-election-namespace", "weft-system",
		"--log-format", "text")
	ctrl.Stdout, ctrl.Stderr = os.Stderr, os.Stderr
	// Its own process group: the terminal's Ctrl-C reaches only weft-run,
	// which then stops the controller before the API server it talks to.
	ctrl.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ctrl.Start(); err != nil {
		return fmt.Errorf("starting weft-controller (run 'make build'?): %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = ctrl.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
			return
		default:
		}
		say("stopping weft-controller")
		_ = ctrl.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = ctrl.Process.Kill()
			<-exited
		}
	}()

	if err := waitReady(ctx, "http://"+monAddr+"/readyz", exited); err != nil {
		if errors.Is(err, errExited) {
			return fmt.Errorf("weft-controller exited before it was ready: %v", waitErr)
		}
		return err
	}
	kubectl := filepath.Join(env.BinDir, "kubectl")
	fmt.Printf(`
weft is ready.
  xDS (gRPC ADS):  %s (plaintext), %s (TLS)
  metrics:         http://%s/metrics   (health: /healthz, /readyz)
  debug:           http://%s/debug/proxies
  kubeconfig:      %s
Try:
  %s --kubeconfig %s get weft -A
Press Ctrl-C to stop everything and remove %s.
`, xdsAddr, xdsTLSAddr, monAddr, debugAddr, env.Kubeconfig, kubectl, env.Kubeconfig, dir)

	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr)
		return nil
	case <-exited:
		return fmt.Errorf("weft-controller exited: %v", waitErr)
	}
}

var errExited = errors.New("exited")

func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted before weft-controller was ready")
		case <-exited:
			return errExited
		case <-tick.C:
		}
	}
}

func hasKustomization(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "kustomization.yaml"))
	return err == nil
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "weft-run: "+format+"\n", args...)
}
