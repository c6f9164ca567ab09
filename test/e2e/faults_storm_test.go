package e2e

// Issue 13's authenticated reconnect storm, with real binaries: 2,000
// simulated sidecars, each with its own pod-bound token from the real
// API server and its own source address, reconnect when the leader is
// killed; then again while a hostile client opens 100 streams a second
// with 1 MiB junk tokens (docs/design/077).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/xds"
)

const (
	stormNamespace = "storm"
	stormAccounts  = 20 // service accounts (and label sets: groups)
)

// stormPod is one pod of the storm with its projected token.
type stormPod struct {
	name, sa, token string
	src             net.IP // its own address, as a pod's
}

// stormPods creates n pods in namespace storm (not meshed: the webhook is
// not asked) and a token for each, bound to it, for audience weft — what
// the kubelet projects into an injected pod.
func stormPods(t *testing.T, ctx context.Context, m *localmesh.Mesh, n int) []stormPod {
	t.Helper()
	cs := m.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stormNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range stormAccounts {
		if _, err := cs.CoreV1().ServiceAccounts(stormNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sa-%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := make([]stormPod, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				p := stormPod{name: fmt.Sprintf("storm-%d", i), sa: fmt.Sprintf("sa-%d", i%stormAccounts),
					src: net.IPv4(127, 1, byte(i/250), byte(1+i%250))}
				pod, err := cs.CoreV1().Pods(stormNamespace).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: map[string]string{"app": p.sa}},
					Spec: corev1.PodSpec{ServiceAccountName: p.sa, AutomountServiceAccountToken: ptr.To(false),
						Containers: []corev1.Container{{Name: "app", Image: "app"}}},
				}, metav1.CreateOptions{})
				if err == nil {
					var tr *authnv1.TokenRequest
					tr, err = cs.CoreV1().ServiceAccounts(stormNamespace).CreateToken(ctx, p.sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
						Audiences:      []string{xds.TokenAudience},
						BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
					}}, metav1.CreateOptions{})
					if err == nil {
						p.token = tr.Status.Token
					}
				}
				if err != nil && !apierrors.IsAlreadyExists(err) {
					mu.Lock()
					firstErr = errors.Join(firstErr, fmt.Errorf("%s: %w", p.name, err))
					mu.Unlock()
					return
				}
				pods[i] = p
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return pods
}

// replicaDialer stands for kube-proxy in front of the xDS port, keeping
// the client's source address (its pod IP): each new connection goes to
// the next live replica, from src.
func replicaDialer(m *localmesh.Mesh, src net.IP) func(context.Context, string) (net.Conn, error) {
	var next atomic.Int64
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var live []string
		for _, c := range m.Controllers() {
			if c != nil && c.Process != nil && c.Err() == nil {
				live = append(live, c.XDSTLS)
			}
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
		var err error = errors.New("no live replica")
		start := int(next.Add(1))
		for i := range live {
			var c net.Conn
			if c, err = d.DialContext(ctx, "tcp", live[(start+i)%len(live)]); err == nil {
				return c, nil
			}
		}
		return nil, err
	}
}

func stormNode(p stormPod) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: stormNamespace, dataplane.MetaServiceAccount: p.sa,
		dataplane.MetaLabels: map[string]any{"app": p.sa}})
	return &corev3.Node{Id: p.name + "." + stormNamespace, Metadata: md}
}

// fleet is the storm's simulated sidecars.
type fleet struct {
	proxies []*xdsload.Proxy
}

// admitted waits until every proxy has opened more than streams streams
// and holds a configuration on its newest one, and returns the time each
// took from start (sorted by proxy).
func (f *fleet) admitted(ctx context.Context, start time.Time, streams []int, timeout time.Duration) ([]time.Duration, error) {
	out := make([]time.Duration, len(f.proxies))
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	var missing atomic.Int64
	for i, p := range f.proxies {
		wg.Go(func() {
			// A new stream starts from nothing (Run resets what the proxy
			// holds as it counts the stream): once it is counted, what the
			// proxy holds came on it.
			for p.Stats().Streams <= streams[i] {
				select {
				case <-wctx.Done():
					missing.Add(1)
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			if p.WaitFor(wctx, func(v map[string]map[string]string) bool {
				return len(v[resourcev3.ListenerType]) > 0
			}) {
				out[i] = time.Since(start)
			} else {
				missing.Add(1)
			}
		})
	}
	wg.Wait()
	if n := missing.Load(); n > 0 {
		return out, fmt.Errorf("%d of %d proxies not admitted within %v", n, len(f.proxies), timeout)
	}
	return out, nil
}

func (f *fleet) streams() []int {
	out := make([]int, len(f.proxies))
	for i, p := range f.proxies {
		out[i] = p.Stats().Streams
	}
	return out
}

// junkFlood opens rate streams a second to the live replicas, each on a
// new TLS connection from one of srcs, whose request headers carry a
// token of size bytes. It counts how each ended until ctx ends.
type junkFlood struct {
	sent, refused, failed atomic.Int64
	mu                    sync.Mutex
	outcomes              map[string]int
}

func (j *junkFlood) run(ctx context.Context, m *localmesh.Mesh, roots *x509.CertPool, rate, size int) {
	token := "Bearer " + strings.Repeat("j", size)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		wg.Go(func() {
			outcome := junkStream(ctx, m, roots, net.IPv4(127, 2, 0, byte(1+i%10)), token)
			j.sent.Add(1)
			j.mu.Lock()
			j.outcomes[outcome]++
			j.mu.Unlock()
		})
	}
}

// junkStream sends one ADS request whose authorization header is token,
// on a raw HTTP/2 connection (gRPC-Go's client would refuse to send
// headers over the server's advertised limit), and says how the server
// answered.
func junkStream(ctx context.Context, m *localmesh.Mesh, roots *x509.CertPool, src net.IP, token string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := replicaDialer(m, src)(ctx, "")
	if err != nil {
		return "not connected (dial: " + errKind(err) + ")"
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: localmesh.ControllerServerName, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err := conn.HandshakeContext(ctx); err != nil {
		return "not connected (TLS handshake: " + errKind(err) + ")"
	}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return "closed before the request"
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return "closed before the request"
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "https"}, {":authority", localmesh.ControllerServerName},
		{":path", "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"authorization", token},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	b := block.Bytes()
	const frag = 16 << 10
	first := b[:min(frag, len(b))]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) <= frag}); err != nil {
		return "closed by the server while the token was sent"
	}
	for off := frag; off < len(b); off += frag {
		end := min(off+frag, len(b))
		if err := fr.WriteContinuation(1, end == len(b), b[off:end]); err != nil {
			return "closed by the server while the token was sent"
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "closed by the server after the token was sent"
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.RSTStreamFrame:
			return "RST_STREAM " + f.ErrCode.String()
		case *http2.HeadersFrame:
			return "answered with headers" // the server read it: it should not have
		}
	}
}

// errKind names an error without its addresses, for counting.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "gave up"
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case strings.Contains(err.Error(), "connection reset"):
		return "reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	}
	return "other"
}

// TestFaultReconnectStorm: issue 13 — 2,000 sidecars, each with its own
// pod-bound token and address, all on the leader; kill it: every proxy
// is admitted by the survivor (2,000 TokenReviews against the real API
// server) — issue 13's target is 30 s, measured and reported; the test
// fails only past 90 s, starvation rather than a slow machine (a run at
// load average 24 took 36 s). The killed replica comes back; kill the other
// while a hostile client opens 100 streams a second with 1 MiB junk
// tokens: every proxy is again admitted (same bound), at a p99 within
// twice the first storm's plus 5 s, and the survivor's heap stays
// within twice the first storm's peak.
func TestFaultReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 proxies")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	m := startMesh(t, localmesh.Options{})
	const n = 2000
	start := time.Now()
	pods := stormPods(t, ctx, m, n)
	t.Logf("%d pods and their bound tokens (TokenRequest) in %v", n, time.Since(start).Round(time.Millisecond))
	roots := meshRoot(t, m)

	f := &fleet{}
	start = time.Now()
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: localmesh.ControllerServerName, MinVersion: tls.VersionTLS12})
	for _, p := range pods {
		conn, err := grpc.NewClient("passthrough:///"+p.name, grpc.WithTransportCredentials(creds), grpc.WithContextDialer(replicaDialer(m, p.src)),
			grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		px := &xdsload.Proxy{Node: stormNode(p), Token: p.token}
		f.proxies = append(f.proxies, px)
		go px.Keep(ctx, conn, time.Second)
	}
	cold, err := f.admitted(ctx, start, make([]int, n), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold start: every proxy admitted by the one replica (its token cache empty) %v after the first connected; last %v",
		quantile(cold, 0.5).Round(time.Millisecond), quantile(cold, 1).Round(time.Millisecond))

	// Heap of each replica, sampled all along.
	var smu sync.Mutex
	heaps := map[int][]sample{}
	go func() {
		for ctx.Err() == nil {
			for i, c := range m.Controllers() {
				if c == nil || c.Process == nil || c.Err() != nil {
					continue
				}
				if mt, err := controllerMetrics(c.Monitoring); err == nil {
					smu.Lock()
					heaps[i] = append(heaps[i], sample{time.Now(), mt["go_memstats_heap_inuse_bytes"], mt["go_goroutines"]})
					smu.Unlock()
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
	peakOf := func(i int, from, to time.Time) (heap float64) {
		smu.Lock()
		defer smu.Unlock()
		for _, s := range heaps[i] {
			if !s.at.Before(from) && !s.at.After(to) {
				heap = max(heap, s.heap)
			}
		}
		return heap
	}

	// Storm 1: the second replica joins, the leader (holding all 2,000) dies.
	if _, err := m.StartController(ctx, 1); err != nil {
		t.Fatal(err)
	}
	storm := func(victim, survivor int, phase string) []time.Duration {
		before := f.streams()
		killed := time.Now()
		m.Controllers()[victim].Kill()
		if err := m.ControllerGone(ctx); err != nil {
			t.Fatal(err)
		}
		lat, err := f.admitted(ctx, killed, before, 3*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		t.Logf("%s: every proxy admitted by replica %d after the kill: p50 %v, p99 %v, last %v; replica %d's peak heap in use %.1f MiB",
			phase, survivor, quantile(lat, 0.5).Round(time.Millisecond), quantile(lat, 0.99).Round(time.Millisecond), quantile(lat, 1).Round(time.Millisecond),
			survivor, peakOf(survivor, killed, time.Now())/(1<<20))
		return lat
	}
	s1Start := time.Now()
	first := storm(0, 1, "storm 1 (leader killed)")
	heap1 := peakOf(1, s1Start, time.Now())
	if last := quantile(first, 1); last > stormBound {
		t.Errorf("storm 1: the last proxy was admitted %v after the kill; want within %v (the target is 30 s)", last, stormBound)
	}

	// Storm 2: the killed replica is back (as the kubelet restarts it);
	// kill the other while junk tokens flood.
	if _, err := m.StartController(ctx, 0); err != nil {
		t.Fatal(err)
	}
	junk := &junkFlood{outcomes: map[string]int{}}
	jctx, stopJunk := context.WithCancel(ctx)
	junkDone := make(chan struct{})
	go func() { defer close(junkDone); junk.run(jctx, m, roots, 100, 1<<20) }()
	time.Sleep(5 * time.Second) // the flood is on before the kill
	s2Start := time.Now()
	second := storm(1, 0, "storm 2 (leader killed, 100 junk streams/s with 1 MiB tokens)")
	heap2 := peakOf(0, s2Start, time.Now())
	stopJunk()
	<-junkDone
	junk.mu.Lock()
	t.Logf("junk streams: %d sent, by outcome: %v", junk.sent.Load(), junk.outcomes)
	for o := range junk.outcomes {
		if strings.HasPrefix(o, "answered") {
			t.Errorf("a stream with a 1 MiB token was answered: %v", junk.outcomes)
		}
	}
	junk.mu.Unlock()
	if last := quantile(second, 1); last > stormBound {
		t.Errorf("storm 2: the last proxy was admitted %v after the kill; want within %v (the target is 30 s)", last, stormBound)
	}
	// The bounds against storm 1 are loose on purpose: the junk competes
	// for the same two cores, and heap in use peaks wherever the garbage
	// collector's pacing happens to leave it (storm 1's peak alone varied
	// 185-227 MiB between runs). What they catch is starvation and
	// retention: junk reviewed ahead of the real tokens (1,000-1,300
	// junk streams per run) would delay them by as many TokenReviews,
	// and a server that kept each 1 MiB token would hold 100 MiB more
	// per second of flood.
	if p99, b := quantile(second, 0.99), 2*quantile(first, 0.99)+5*time.Second; p99 > b {
		t.Errorf("storm 2 under junk: p99 %v; want at most 2 × storm 1's p99 + 5 s = %v", p99, b)
	}
	if heap2 > 2*heap1 {
		t.Errorf("storm 2 under junk: survivor's heap in use peaked at %.1f MiB; want at most 2 × storm 1's %.1f MiB", heap2/(1<<20), heap1/(1<<20))
	}
}

// stormBound is how late the last proxy of a storm may be admitted before
// the test fails: three times issue 13's 30 s target, whose figure the
// test logs (docs/design/077: 9-15 s here when the machine is quiet). Tests
// must not fail because the machine is slow; 2,000 TokenReviews starved
// behind junk, or reviewed at client-go's default 5 a second (the bug this
// guards), take minutes.
const stormBound = 90 * time.Second

// sample is a replica's heap in use and goroutines at a time.
type sample struct {
	at         time.Time
	heap, gors float64
}
