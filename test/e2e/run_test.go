package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestMakeRun drives the `make run` launcher as a person would: wait for it
// to say it is ready, paste the kubectl lines it prints — one lists the
// canary sample's policies, one moves its split to 50/50 — and watch the
// live view show the new weights and the observed split follow them, with
// the TrafficSplit Programmed again; then press Ctrl-C and check that no
// process and no temporary folder is left behind.
func TestMakeRun(t *testing.T) {
	requireHostIP(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin("weft-run"),
		"--xds-address", freeAddr(t), "--monitoring-address", freeAddr(t), "--debug-address", freeAddr(t), "--xds-tls-address", freeAddr(t),
		"--tmp-dir", tmp, "--bin-dir", binDir, "--view", "on", "--view-interval", "500ms")
	// A terminal sends Ctrl-C to its foreground process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1000)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			select {
			case lines <- s.Text():
			default: // the test stopped reading; the view keeps printing
			}
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("weft-run stderr:\n%s", stderr.String())
		}
	})

	var getLine, patchLine, statLine, denyLine, runLine, checkLine, proxiesLine string
	deadline := time.After(5 * time.Minute) // a cold machine builds nothing here, but starts slowly
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("weft-run ended before it was ready: %v", <-exited)
			}
			line = strings.TrimSpace(line)
			switch {
			case strings.Contains(line, "kubectl --kubeconfig") && strings.Contains(line, " get trafficsplit"):
				getLine = line
			case strings.Contains(line, "kubectl --kubeconfig") && strings.Contains(line, " patch trafficsplit checkout"):
				patchLine = line
			case strings.Contains(line, "weft --kubeconfig") && strings.Contains(line, " stat "):
				statLine = line
			case strings.Contains(line, "kubectl --kubeconfig") && strings.Contains(line, " apply -f ") && strings.Contains(line, "deny-frontend"):
				denyLine = line
			case strings.Contains(line, "kubectl --kubeconfig") && strings.Contains(line, " run demo "):
				runLine = line
			case strings.HasPrefix(line, "check it:"):
				checkLine = strings.TrimSpace(strings.TrimPrefix(line, "check it:"))
			case strings.HasPrefix(line, "its proxies:"):
				proxiesLine = strings.TrimSpace(strings.TrimPrefix(line, "its proxies:"))
			}
			if strings.HasPrefix(line, "Press Ctrl-C") {
				break wait
			}
		case <-deadline:
			t.Fatal("weft-run did not become ready")
		}
	}
	if getLine == "" || patchLine == "" || statLine == "" || denyLine == "" || runLine == "" || checkLine == "" || proxiesLine == "" {
		t.Fatalf("weft-run printed no kubectl get, patch, run, weft stat, deny, weft check or weft proxy-status line (get %q, patch %q, run %q, stat %q, deny %q, check %q, proxy-status %q)",
			getLine, patchLine, runLine, statLine, denyLine, checkLine, proxiesLine)
	}

	// weft check, as printed, on the fresh mesh: every line ✔ (the samples
	// it applies are the demo's, each in effect; docs/design/140).
	var checkOut []byte
	testkit.EventuallyTrue(t, checkLine+" all ✔", func() bool {
		var err error
		checkOut, err = exec.Command("sh", "-c", checkLine).CombinedOutput()
		return err == nil
	})
	for _, l := range strings.Split(strings.TrimSpace(string(checkOut)), "\n") {
		if !strings.HasPrefix(l, "✔ ") {
			t.Errorf("%s: %q; want every line ✔", checkLine, l)
		}
	}
	t.Logf("%s:\n%s", checkLine, checkOut)
	out, err := exec.Command("sh", "-c", proxiesLine).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "frontend-0.shop") {
		t.Fatalf("%s: %v; want the demo's proxies\n%s", proxiesLine, err, out)
	}

	// The printed lines work as pasted into a shell.
	out, err = exec.Command("sh", "-c", getLine).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", getLine, err, out)
	}
	for _, want := range []string{"trafficsplit.mesh.weft.dev/checkout", "ROOT SERVICE", "retrypolicy.mesh.weft.dev/checkout", "authpolicy.mesh.weft.dev/checkout-from-frontend"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("%s printed no %q:\n%s", getLine, want, out)
		}
	}
	// kubectl run in the meshed namespace: the pod is injected, as in a
	// cluster (the line's own hint reads it back).
	if out, err := exec.Command("sh", "-c", runLine).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", runLine, err, out)
	}
	hint := strings.TrimSpace(runLine[strings.Index(runLine, "# injected:")+len("# injected:"):])
	out, err = exec.Command("sh", "-c", hint).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "weft.dev/inject-status: injected") || !strings.Contains(string(out), "name: weft-proxy") {
		t.Fatalf("%s (%v): want the pod injected with weft-proxy:\n%s", hint, err, out)
	}

	// The live view shows the canary's calls: checkout-v2 with its 10%
	// weight.
	v2 := regexp.MustCompile(`checkout-v2\s+(\S+)\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+([0-9.]+)%\s+([0-9]+)%`)
	viewShows := func(what string, ok func(share float64, weight int, success string) bool) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		var last string
		for {
			select {
			case line, open := <-lines:
				if !open {
					t.Fatalf("weft-run ended: %v", <-exited)
				}
				if m := v2.FindStringSubmatch(line); m != nil {
					last = line
					share, _ := strconv.ParseFloat(m[2], 64)
					weight, _ := strconv.Atoi(m[3])
					if ok(share, weight, m[1]) {
						t.Logf("the live view shows %s: %s", what, strings.TrimSpace(line))
						return
					}
				}
			case <-deadline:
				t.Fatalf("the live view never showed %s; last checkout-v2 line: %q", what, last)
			}
		}
	}
	viewShows("checkout-v2 at its 10% weight", func(share float64, weight int, success string) bool {
		return weight == 10 && share > 0 && share < 30 && success == "100.00%"
	})
	// weft stat reads the same numbers.
	out, err = exec.Command("sh", "-c", statLine).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", statLine, err, out)
	}
	if m := v2.FindStringSubmatch(string(out)); m == nil || m[3] != "10" {
		t.Fatalf("%s shows no checkout-v2 row at its 10%% weight:\n%s", statLine, out)
	}
	if out, err := exec.Command("sh", "-c", patchLine).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", patchLine, err, out)
	}
	viewShows("checkout-v2 near 50% after the patch", func(share float64, weight int, _ string) bool {
		return weight == 50 && share > 35 && share < 65
	})

	// The deny line: the frontend's calls to catalog fail, as the view's
	// catalog row shows.
	if out, err := exec.Command("sh", "-c", denyLine).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", denyLine, err, out)
	}
	catalog := regexp.MustCompile(`^catalog\s+([0-9.]+)%`)
	deadline = time.After(2 * time.Minute)
denied:
	for {
		select {
		case line, open := <-lines:
			if !open {
				t.Fatalf("weft-run ended: %v", <-exited)
			}
			if m := catalog.FindStringSubmatch(strings.TrimSpace(line)); m != nil && m[1] == "0.00" {
				t.Logf("the live view shows the denial: %s", strings.TrimSpace(line))
				break denied
			}
		case <-deadline:
			t.Fatal("the live view never showed catalog's calls failing after the deny AuthPolicy")
		}
	}

	entries, _ := os.ReadDir(tmp)
	if len(entries) != 1 {
		t.Fatalf("want one temporary folder in %s, found %d", tmp, len(entries))
	}
	runDir := filepath.Join(tmp, entries[0].Name())

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // drain the view's last frames
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("weft-run exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("weft-run still running 2 minutes after Ctrl-C")
	}
	if _, err := os.Stat(runDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary folder %s left behind (stat: %v)", runDir, err)
	}
	// etcd's data, the API server's certificates, the kubeconfig and every
	// workload's files live in runDir, so every process weft-run started
	// names it on its command line.
	if left := processesMentioning(runDir); len(left) > 0 {
		t.Fatalf("processes left behind: %q", left)
	}
}

func processesMentioning(s string) []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		found = append(found, f+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	return found
}

// syncBuffer is a bytes.Buffer safe for a process writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
