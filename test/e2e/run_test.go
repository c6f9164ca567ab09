package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMakeRun drives the `make run` launcher as a person would: wait for it
// to say it is ready, paste the kubectl line it prints, press Ctrl-C, and
// check that no process and no temporary folder is left behind.
func TestMakeRun(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command(bin("weft-run"),
		"--xds-address", freeAddr(t), "--monitoring-address", freeAddr(t), "--debug-address", freeAddr(t), "--webhook-address", freeAddr(t), "--xds-tls-address", freeAddr(t),
		"--tmp-dir", tmp, "--controller", bin("weft-controller"))
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
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
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

	var kubectlLine string
	deadline := time.After(5 * time.Minute) // a cold machine builds nothing here, but starts slowly
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("weft-run ended before it was ready: %v", <-exited)
			}
			if strings.Contains(line, "--kubeconfig") && strings.Contains(line, "kubectl") {
				kubectlLine = strings.TrimSpace(line)
			}
			if strings.HasPrefix(line, "Press Ctrl-C") {
				break wait
			}
		case <-deadline:
			t.Fatal("weft-run did not become ready")
		}
	}
	if kubectlLine == "" {
		t.Fatal("weft-run printed no kubectl line")
	}

	// The printed line works as pasted into a shell.
	out, err := exec.Command("sh", "-c", kubectlLine).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", kubectlLine, err, out)
	}
	// It lists the samples that make run applied, with their columns.
	for _, want := range []string{"meshconfig.mesh.weft.dev/weft", "trafficsplit.mesh.weft.dev/checkout", "ROOT SERVICE"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("%s printed no %q:\n%s", kubectlLine, want, out)
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
	// etcd's data, the API server's certificates and the controller's
	// kubeconfig all live in runDir, so every process weft-run started names
	// it on its command line.
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
