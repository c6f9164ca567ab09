package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// apiServerStopTimeout is how long StopAPIServer waits after SIGTERM
// before it kills. With clients watching, kube-apiserver's graceful stop
// was seen to take more than 30 s here; a fault test wants the outage to
// start when it asks, so the grace is short.
const apiServerStopTimeout = 5 * time.Second

// apiServer is a kube-apiserver that StartAPIServer started again: envtest
// started the first one and cannot restart it on the same certificates
// (its Start makes a new serving CA, a new client CA and a new
// service-account signing key, which would invalidate every kubeconfig
// and every token issued so far).
type apiServer struct {
	args   []string // the command line envtest built, argv[0] included
	cmd    *exec.Cmd
	exited chan struct{}
	pid    int // the running process (envtest's or ours); 0 when stopped
}

// StopAPIServer stops kube-apiserver alone, as a control-plane outage
// does: etcd keeps running, and the certificates, the service-account
// signing key, the port and the kubeconfig stay, so StartAPIServer brings
// the same API server back and every client and token works again. It
// sends SIGTERM (kube-apiserver's graceful stop: watches end, clients see
// their connections close) and SIGKILL after apiServerStopTimeout (5 s).
func (e *Env) StopAPIServer() error {
	e.apiMu.Lock()
	defer e.apiMu.Unlock()
	if e.api == nil {
		pid, args, err := e.findAPIServer()
		if err != nil {
			return err
		}
		e.api = &apiServer{args: args, pid: pid}
	}
	if e.api.pid == 0 {
		return errors.New("testenv: kube-apiserver is already stopped")
	}
	return e.api.stop()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the
// same command line, and waits until it answers /readyz (or ctx ends). Its
// output goes to apiserver-restart.log in the certificate folder.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.apiMu.Lock()
	defer e.apiMu.Unlock()
	if e.api == nil || e.api.pid != 0 {
		return errors.New("testenv: kube-apiserver is running; StopAPIServer first")
	}
	logPath := filepath.Join(e.env.ControlPlane.APIServer.CertDir, "apiserver-restart.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(e.api.args[0], e.api.args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	e.api.cmd, e.api.exited, e.api.pid = cmd, exited, cmd.Process.Pid
	if err := e.waitReady(ctx, exited); err != nil {
		return fmt.Errorf("restarted kube-apiserver: %w (its log: %s)", err, logPath)
	}
	return nil
}

// stopRestarted ends a kube-apiserver that StartAPIServer started (Stop
// calls it before envtest stops etcd).
func (e *Env) stopRestarted() error {
	e.apiMu.Lock()
	defer e.apiMu.Unlock()
	if e.api == nil || e.api.cmd == nil || e.api.pid == 0 {
		return nil
	}
	return e.api.stop()
}

func (a *apiServer) stop() error {
	pid := a.pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	gone := func() bool {
		if a.exited != nil {
			select {
			case <-a.exited:
				return true
			default:
				return false
			}
		}
		// envtest's own process: its goroutine reaps it.
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	deadline := time.Now().Add(apiServerStopTimeout)
	for !gone() {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(apiServerStopTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.pid = 0
	return nil
}

// findAPIServer finds the kube-apiserver envtest started for this Env: a
// child of this process whose --cert-dir is this Env's.
func (e *Env) findAPIServer() (int, []string, error) {
	certDir := e.env.ControlPlane.APIServer.CertDir
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, fmt.Errorf("testenv: finding kube-apiserver: %w", err)
	}
	self := os.Getpid()
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		_, rest, ok := strings.Cut(string(stat), ") ")
		if fields := strings.Fields(rest); !ok || len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != "kube-apiserver" {
			continue
		}
		for _, a := range args[1:] {
			if a == "--cert-dir="+certDir {
				return pid, args, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("testenv: no kube-apiserver child of this process with --cert-dir=%s", certDir)
}

// waitReady polls /readyz as the admin until it answers 200.
func (e *Env) waitReady(ctx context.Context, exited <-chan struct{}) error {
	hc, err := rest.HTTPClientFor(e.Config)
	if err != nil {
		return err
	}
	hc.Timeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	last := errors.New("no answer yet")
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(e.Config.Host, "/")+"/readyz", nil)
		if resp, err := hc.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		select {
		case <-exited:
			return errors.New("it exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
