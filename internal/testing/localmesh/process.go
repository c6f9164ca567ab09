package localmesh

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is a binary the launcher started. Its output goes to a file in
// the run folder's logs/ (make run prints where) and is kept for tests to
// show when they fail.
type Process struct {
	Name    string
	LogPath string

	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{}
	err    error // Wait's, valid after exited is closed
	once   sync.Once
}

// StopTimeout is how long Stop waits after SIGTERM before SIGKILL: the
// controller's graceful shutdown (leader election release, stream drain)
// takes a few seconds; 20 s leaves room on a loaded 2-core machine.
const StopTimeout = 20 * time.Second

func startProcess(logDir, name, path string, env []string, args ...string) (*Process, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a terminal's Ctrl-C reaches only the launcher,
	// which stops what it started in order (workloads, controllers, then
	// the API server they talk to).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, log: f, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the process ended; nil while it runs.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		if p.err == nil {
			return errors.New("exited with status 0")
		}
		return p.err
	default:
		return nil
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to StopTimeout, then kills. It returns how
// the process ended when that was not a clean exit after SIGTERM.
func (p *Process) Stop() error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			err = p.err
		case <-time.After(StopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			err = fmt.Errorf("%s still running %v after SIGTERM; killed", p.Name, StopTimeout)
		}
	})
	return err
}

// Kill ends the process at once (SIGKILL), as a crashed node or an OOM
// kill would, and waits for it.
func (p *Process) Kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

// Logs is the tail of the process's output, at most max bytes.
func (p *Process) Logs(max int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	if len(b) > max {
		b = append([]byte("…"), b[len(b)-max:]...)
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}
