package loadtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// BuildController builds cmd/weft-controller from the weft repository at
// root into dir and returns the binary's path.
func BuildController(root, dir string) (string, error) {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/weft-controller")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/weft-controller: %v\n%s", err, out)
	}
	return filepath.Join(dir, "weft-controller"), nil
}

// controller is a running weft-controller process.
type controller struct {
	xds, monitoring string
	cmd             *exec.Cmd
	exited          chan struct{}
	waitErr         error
}

// startController runs bin against kubeconfig on free loopback ports and
// waits until /readyz passes (informers synced, xDS serving). Proxies use
// the plaintext xDS port, which is anonymous whatever --xds-auth says:
// configuration only, no secrets, so no tokens are needed.
func startController(ctx context.Context, bin, kubeconfig string, logs io.Writer) (*controller, error) {
	addrs, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	c := &controller{xds: addrs[0], monitoring: addrs[1], exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "--kubeconfig", kubeconfig,
		"--xds-address", addrs[0], "--monitoring-address", addrs[1], "--debug-address", addrs[2],
		"--webhook-address", addrs[3], "--xds-tls-address", addrs[4], "--log-format", "text")
	c.cmd.Stdout, c.cmd.Stderr = logs, logs
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { c.waitErr = c.cmd.Wait(); close(c.exited) }()
	for {
		if code, _, err := httpGet(ctx, "http://"+c.monitoring+"/readyz"); err == nil && code == http.StatusOK {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("weft-controller exited before it was ready: %v", c.waitErr)
		case <-ctx.Done():
			c.stop()
			return nil, fmt.Errorf("weft-controller not ready: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits (killing it after 30 s).
func (c *controller) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// metric reads one metric (summed over labels) from /metrics.
func (c *controller) metric(ctx context.Context, name string) (float64, error) {
	code, body, err := httpGet(ctx, "http://"+c.monitoring+"/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d", code)
	}
	v, ok := metricValue(body, name)
	if !ok {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	return v, nil
}

// memSample is the controller's memory at one moment.
type memSample struct {
	// heap is go_memstats_heap_alloc_bytes at the first scrape after a
	// garbage collection (afterGC), else the smallest
	// go_memstats_heap_inuse_bytes of 5 samples 1 s apart.
	heap    float64
	afterGC bool
	rss     float64
}

// memory measures the heap the controller keeps. Heap figures between
// collections include garbage, by up to GOGC (100%) of the live heap, so
// it waits up to wait for a collection that finished after since and
// reads the heap at the first scrape after it: the live heap plus the
// little an idle controller allocated meanwhile. Go collects at least
// every 2 minutes, so a wait of 2.5 minutes always sees one. Without one
// it falls back to the smallest heap in use among 5 samples.
func (c *controller) memory(ctx context.Context, since time.Time, wait time.Duration) (memSample, error) {
	read := func() (map[string]float64, error) {
		code, body, err := httpGet(ctx, "http://"+c.monitoring+"/metrics")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/metrics: HTTP %d", code)
		}
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, name := range []string{"go_memstats_last_gc_time_seconds", "go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
			v, ok := metricValue(body, name)
			if !ok {
				return nil, fmt.Errorf("/metrics has no %s", name)
			}
			out[name] = v
		}
		return out, nil
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m, err := read()
		if err != nil {
			return memSample{}, err
		}
		if lastGC := time.Unix(0, int64(m["go_memstats_last_gc_time_seconds"]*1e9)); lastGC.After(since) {
			return memSample{heap: m["go_memstats_heap_alloc_bytes"], afterGC: true, rss: m["process_resident_memory_bytes"]}, nil
		}
		select {
		case <-ctx.Done():
			return memSample{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	s := memSample{heap: -1, rss: -1}
	for i := range 5 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return memSample{}, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		m, err := read()
		if err != nil {
			return memSample{}, err
		}
		if h := m["go_memstats_heap_inuse_bytes"]; s.heap < 0 || h < s.heap {
			s.heap = h
		}
		if r := m["process_resident_memory_bytes"]; s.rss < 0 || r < s.rss {
			s.rss = r
		}
	}
	return s, nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago (held open together, so none repeats).
func freeAddrs(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
