package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// Flavor names a control plane the harness can run.
type Flavor string

const (
	// Weft is weft-controller.
	Weft Flavor = "weft"
	// Istiod is Istio's pilot-discovery, run outside a cluster with
	// plaintext xDS on a loopback port (IstiodArgs, IstiodEnv).
	Istiod Flavor = "istiod"
)

// Plane is a control plane binary to measure.
type Plane struct {
	Flavor Flavor
	Binary string
}

// controller is a running control plane process.
type controller struct {
	flavor Flavor
	// xds is the plaintext ADS address; monitoring serves /metrics; debug
	// (weft) /debug/pprof/.
	xds, monitoring, debug string
	cmd                    *exec.Cmd
	exited                 chan struct{}
	waitErr                error
}

// IstiodEnv is the environment pilot-discovery runs with (besides the
// harness's own): no CA, no webhooks to patch, no injection (there is no
// template), GOMAXPROCS=2 as weft gets. Everything else is istiod's
// default, including its 25 new streams a second (PILOT_MAX_REQUESTS_PER_SECOND)
// and its debounce (PILOT_DEBOUNCE_AFTER 100ms, PILOT_DEBOUNCE_MAX 10s).
var IstiodEnv = []string{
	"GOMAXPROCS=2",
	"POD_NAME=istiod-bench", "POD_NAMESPACE=" + IstioNamespace, "REVISION=default",
	"ENABLE_CA_SERVER=false",
	"PILOT_CERT_PROVIDER=none",
	"INJECTION_WEBHOOK_CONFIG_NAME=", "VALIDATION_WEBHOOK_CONFIG_NAME=",
	"PILOT_ENABLE_GATEWAY_API=false", "PILOT_ENABLE_GATEWAY_API_STATUS=false",
	"PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER=false",
	"PILOT_ENABLE_ANALYSIS=false", "PILOT_ENABLE_STATUS=false",
	"CLUSTER_ID=" + IstioClusterID,
}

// IstioNamespace is istiod's own namespace (its root namespace too);
// IstioClusterID its cluster name, which sidecars repeat in CLUSTER_ID.
const (
	IstioNamespace = "istio-system"
	IstioClusterID = "Kubernetes"
)

// IstiodArgs are pilot-discovery's flags: every port on loopback, the
// secure xDS port off (plaintext xDS only), no mesh configuration file
// (istiod's defaults).
func IstiodArgs(kubeconfig string, addrs []string) []string {
	return []string{"discovery", "--kubeconfig", kubeconfig,
		"--grpcAddr", addrs[0], "--monitoringAddr", addrs[1], "--httpAddr", addrs[2], "--httpsAddr", addrs[3],
		"--secureGRPCAddr", "", "--domain", "cluster.local", "--clusterID", IstioClusterID,
		"--meshConfig", "/nonexistent/mesh", "--networksConfig", "/nonexistent/meshNetworks",
		"--namespace", IstioNamespace, "--shutdownDuration", "1s", "--log_output_level", "default:warn"}
}

// startController runs a control plane against kubeconfig on free
// loopback ports and waits until it says it is ready (weft: /readyz,
// informers synced and xDS serving; istiod: /ready). Proxies use the
// plaintext xDS port, which is anonymous (weft, whatever --xds-auth says;
// istiod skips authentication on non-TLS connections): configuration
// only, no secrets, so no tokens are needed.
func startController(ctx context.Context, p Plane, kubeconfig string, logs io.Writer) (*controller, error) {
	addrs, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	c := &controller{flavor: p.Flavor, xds: addrs[0], monitoring: addrs[1], debug: addrs[2], exited: make(chan struct{})}
	ready := "http://" + c.monitoring + "/readyz"
	switch p.Flavor {
	case Weft, "":
		c.flavor = Weft
		c.cmd = exec.Command(p.Binary, "--kubeconfig", kubeconfig,
			"--xds-address", addrs[0], "--monitoring-address", addrs[1], "--debug-address", addrs[2],
			// Every simulated proxy is its own workload on the anonymous port,
			// whose default caps (1,024 streams, 256 groups) are for a few
			// proxyless applications, not a load test.
			"--xds-plaintext-max-streams", "100000", "--xds-plaintext-max-groups", "100000",
			"--webhook-address", addrs[3], "--xds-tls-address", addrs[4], "--log-format", "text")
		c.cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	case Istiod:
		c.cmd = exec.Command(p.Binary, IstiodArgs(kubeconfig, addrs)...)
		c.cmd.Env = append(os.Environ(), IstiodEnv...)
		ready = "http://" + addrs[2] + "/ready"
	default:
		return nil, fmt.Errorf("unknown control plane %q", p.Flavor)
	}
	c.cmd.Stdout, c.cmd.Stderr = logs, logs
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.Binary, err)
	}
	go func() { c.waitErr = c.cmd.Wait(); close(c.exited) }()
	for {
		if code, _, err := httpGet(ctx, ready); err == nil && code == http.StatusOK {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("%s exited before it was ready: %v", c.flavor, c.waitErr)
		case <-ctx.Done():
			c.stop()
			return nil, fmt.Errorf("%s not ready: %w", c.flavor, ctx.Err())
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

// cpu is the controller's CPU seconds so far (user and system), read
// from /proc/PID/stat: the same source for every control plane.
func (c *controller) cpu(context.Context) (float64, error) {
	return procCPU(c.cmd.Process.Pid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// procCPU reads utime + stime of a process from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return statCPU(string(b))
}

// statCPU parses utime and stime (fields 14 and 15) of a /proc/PID/stat
// line; the command name (field 2) may hold spaces and parentheses, so
// fields are counted after its last ')'.
func statCPU(stat string) (float64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc stat line without a command: %q", stat)
	}
	f := strings.Fields(stat[end+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat line too short: %q", stat)
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (u + s) / clockTicks, nil
}

// pushesMetric is the counter of pushes each control plane exports.
func (c *controller) pushesMetric() string {
	if c.flavor == Istiod {
		return "pilot_xds_pushes"
	}
	return "weft_xds_pushes_total"
}

// ownCPU is this process's CPU seconds so far (user and system): what the
// simulated proxies cost, on the same cores as the controller.
func ownCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// memSample is the controller's memory at one moment.
type memSample struct {
	// heap is the live heap the last garbage collection marked (afterGC),
	// else the smallest go_memstats_heap_inuse_bytes of 5 samples 1 s
	// apart, garbage included.
	heap    float64
	afterGC bool
	// gcs: the collections after since that the reading waited for.
	gcs int
	rss float64
	// runtime is the Go runtime's own account of the memory behind rss
	// at the same scrape (MemStats).
	runtime RuntimeMemory
}

// RuntimeMemory is where a Go control plane's resident memory goes, from
// the go_memstats_* metrics both planes export: heap spans in use, heap
// spans free but still mapped (idle minus released: what the runtime
// keeps for the next allocations), goroutine stacks, and everything the
// runtime obtained from the OS (sys). RSS beyond sys-released is the
// binary and C memory.
type RuntimeMemory struct {
	HeapInuse, HeapIdle, HeapReleased, StackInuse, Sys float64
}

func runtimeMemory(m map[string]float64) RuntimeMemory {
	return RuntimeMemory{HeapInuse: m["go_memstats_heap_inuse_bytes"], HeapIdle: m["go_memstats_heap_idle_bytes"],
		HeapReleased: m["go_memstats_heap_released_bytes"], StackInuse: m["go_memstats_stack_inuse_bytes"], Sys: m["go_memstats_sys_bytes"]}
}

// liveHeap is the heap the last collection found live, recovered from the
// heap goal it set: goal = live + (live + stacks + globals) × GOGC/100
// (Go ≥ 1.18). Stacks in use stand in for the stacks scanned; globals are
// a constant that cancels out of a difference. (HeapAlloc right after a
// collection would still count garbage not yet swept.)
func liveHeap(nextGC, stacks, gogc float64) float64 {
	g := gogc / 100
	return (nextGC - g*stacks) / (1 + g)
}

// memory measures the heap the controller keeps. Heap figures between
// collections include garbage, up to GOGC (100%) of the live heap, so it
// waits for collections that finished after since and derives the live
// heap from the heap goal the last of them set. One collection is not
// enough: sync.Pool keeps what it pooled (gRPC's buffers, encoders'
// scratch space) in a victim cache until the next collection, so the
// first collection after a burst still counts it as live; the second
// drops it. gcs is how many collections to wait for (2 reads what a
// quiet process keeps; 1 what it kept a moment after the burst). Go
// collects at least every 2 minutes, so a wait of 2.5 minutes per
// collection always sees them. Without them in time it falls back to the
// smallest heap in use among 5 samples.
func (c *controller) memory(ctx context.Context, since time.Time, wait time.Duration, gcs int) (memSample, error) {
	read := func() (map[string]float64, error) {
		code, body, err := httpGet(ctx, "http://"+c.monitoring+"/metrics")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/metrics: HTTP %d", code)
		}
		if err != nil {
			return nil, err
		}
		out := map[string]float64{"go_gc_gogc_percent": 100} // the default, if not exported
		// The runtime's account of the RSS is optional: without it the
		// report has no breakdown.
		optional := map[string]bool{"go_gc_gogc_percent": true, "go_memstats_heap_idle_bytes": true,
			"go_memstats_heap_released_bytes": true, "go_memstats_sys_bytes": true}
		for _, name := range []string{"go_memstats_last_gc_time_seconds", "go_memstats_next_gc_bytes", "go_memstats_stack_inuse_bytes",
			"go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "go_gc_gogc_percent",
			"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_sys_bytes"} {
			v, ok := metricValue(body, name)
			if !ok && !optional[name] {
				return nil, fmt.Errorf("/metrics has no %s", name)
			}
			if ok {
				out[name] = v
			}
		}
		return out, nil
	}
	gcs = max(gcs, 1)
	deadline := time.Now().Add(wait * time.Duration(gcs))
	seen := 0 // collections seen after since
	for time.Now().Before(deadline) {
		m, err := read()
		if err != nil {
			return memSample{}, err
		}
		if lastGC := time.Unix(0, int64(m["go_memstats_last_gc_time_seconds"]*1e9)); lastGC.After(since) {
			if m["go_gc_gogc_percent"] <= 0 { // GOGC=off has no goal
				break
			}
			// Scrapes are 250 ms apart, collections (when quiet)
			// minutes: a newer last-collection time is one more.
			seen, since = seen+1, lastGC
			if seen >= gcs {
				return memSample{heap: liveHeap(m["go_memstats_next_gc_bytes"], m["go_memstats_stack_inuse_bytes"], m["go_gc_gogc_percent"]), afterGC: true,
					gcs: seen, rss: m["process_resident_memory_bytes"], runtime: runtimeMemory(m)}, nil
			}
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
			s.rss, s.runtime = r, runtimeMemory(m)
		}
	}
	return s, nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	return httpGetWithin(ctx, url, 10*time.Second)
}

// httpGetWithin is httpGet with its own time limit.
func httpGetWithin(ctx context.Context, url string, limit time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
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

// cpuProfile writes weft's CPU profile over the next d to path.
func (c *controller) cpuProfile(ctx context.Context, path string, d time.Duration) error {
	if c.flavor != Weft {
		return nil
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	code, body, err := httpGetWithin(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.debug, secs), time.Duration(secs)*time.Second+30*time.Second)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/debug/pprof/profile: HTTP %d", code)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o644)
}

// heapProfile writes weft's heap profile (live objects as of a fresh
// collection: ?gc=1) to path. It asks twice, so that the profile follows
// two collections, as the memory reading does: what sync.Pool holds
// survives one.
func (c *controller) heapProfile(ctx context.Context, path string) error {
	if c.flavor != Weft {
		return nil
	}
	if _, _, err := httpGet(ctx, "http://"+c.debug+"/debug/pprof/heap?gc=1"); err != nil {
		return err
	}
	code, body, err := httpGet(ctx, "http://"+c.debug+"/debug/pprof/heap?gc=1")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/debug/pprof/heap: HTTP %d", code)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o644)
}
