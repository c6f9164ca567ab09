package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/controller/replicas"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/xdsload"
)

// TestProgrammedAcrossReplicas runs two weft-controller processes, as the
// Deployment does, with a proxy (a simulated Envoy on a real Delta xDS
// stream) on each. The leader writes status, but the proxy on the other
// replica counts: Programmed waits for its ACK, shows its NACK, and
// follows the leader's proxy alone once that replica stops.
func TestProgrammedAcrossReplicas(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := env.Kubectl(ctx, []byte(rolloutYAML), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// The leader first, so that it holds the Lease when b starts.
	a := startReplica(t, env, "weft-controller-a")
	a.waitReady(t)
	testkit.Eventually(t, "a takes the leader Lease", func() error {
		var l coordinationv1.Lease
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, &l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return errors.New("no holder")
		}
		return nil
	})
	b := startReplica(t, env, "weft-controller-b")
	b.waitReady(t)
	for _, name := range []string{"weft-controller-a", "weft-controller-b"} {
		testkit.Eventually(t, "the report Lease of "+name, func() error {
			var l coordinationv1.Lease
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: name}, &l); err != nil {
				return err
			}
			if l.Labels[replicas.LabelKey] != replicas.LabelValue || l.Annotations[replicas.Annotation] == "" {
				return fmt.Errorf("not a report: %v %v", l.Labels, l.Annotations)
			}
			return nil
		})
	}
	if !strings.Contains(a.output(), "counting other replicas' proxies in policy status") {
		t.Error("replica a, the leader, does not say it reads the other replicas' reports")
	}

	// A proxy on each replica. The one on b (the non-leader) can hold its
	// route ACKs, and reject routes.
	token := saToken(t, env, "shop", "frontend")
	proxyA := &xdsload.Proxy{Node: frontendNode("frontend-a.shop"), Token: token}
	var holdB, rejectB atomic.Bool
	heldB := make(chan struct{}, 1)
	releaseB := make(chan struct{})
	proxyB := &xdsload.Proxy{Node: frontendNode("frontend-b.shop"), Token: token, Reject: func(r *discoveryv3.DeltaDiscoveryResponse) string {
		if r.TypeUrl != resourcev3.RouteType {
			return ""
		}
		if holdB.Load() {
			// Like an Envoy that is slow to apply: no answer yet.
			select {
			case heldB <- struct{}{}:
			default:
			}
			<-releaseB
		}
		if rejectB.Load() {
			return "replica b's proxy refuses weight 90"
		}
		return ""
	}}
	runProxy(ctx, t, proxyA, dialSidecarPort(t, env, a.xds))
	bCtx, stopProxyB := context.WithCancel(ctx)
	defer stopProxyB()
	runProxy(bCtx, t, proxyB, dialSidecarPort(t, env, b.xds))

	programmed := func(want string) (string, error) {
		out, err := env.Kubectl(ctx, nil, "get", "trafficsplit", "checkout", "-n", "shop", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].observedGeneration} {.status.conditions[?(@.type=="Programmed")].status} {.status.conditions[?(@.type=="Programmed")].reason}: {.status.conditions[?(@.type=="Programmed")].message}`)
		if err != nil {
			return out, err
		}
		if !strings.HasPrefix(out, want) {
			return out, fmt.Errorf("Programmed = %q, want it to start with %q", out, want)
		}
		return out, nil
	}
	// Both proxies count: the leader's message says two.
	testkit.Eventually(t, "generation 1 programmed on both replicas' proxies", func() error {
		_, err := programmed("1 True Programmed: All 2 proxies")
		return err
	})

	t.Run("the non-leader's proxy holds Programmed until it ACKs", func(t *testing.T) {
		holdB.Store(true)
		routeA := proxyA.Held(resourcev3.RouteType)[checkoutRoute]
		patchSplit(ctx, t, env, 50, 50) // generation 2
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer wcancel()
		if !proxyA.WaitFor(wctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][checkoutRoute] != routeA }) {
			t.Fatal("the leader's proxy never received generation 2")
		}
		select {
		case <-heldB:
		case <-wctx.Done():
			t.Fatal("the non-leader's proxy never received generation 2")
		}
		// The leader's proxy has ACKed; the other has not. The leader must
		// say so — never Programmed=True for generation 2.
		testkit.Eventually(t, "generation 2 pending on the non-leader's proxy", func() error {
			out, err := programmed("2 ")
			if err == nil && strings.HasPrefix(out, "2 True") {
				t.Fatalf("Programmed=True for generation 2 while the non-leader's proxy has not ACKed it: %s", out)
			}
			if err != nil {
				return err
			}
			_, err = programmed("2 Unknown Pending: Waiting for 2 proxies to acknowledge generation 2")
			return err
		})
		if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed", "trafficsplit/checkout", "--timeout=3s"); err == nil {
			t.Fatalf("kubectl wait for Programmed passed while a proxy holds its ACK: %s", out)
		}
		holdB.Store(false)
		close(releaseB)
		if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed", "trafficsplit/checkout", "--timeout=120s"); err != nil {
			t.Fatalf("after the ACK: %v\n%s", err, out)
		}
		if out, err := programmed("2 True Programmed: All 2 proxies"); err != nil {
			t.Fatal(out, err)
		}
	})

	t.Run("the non-leader's proxy's NACK shows as ProxyRejected", func(t *testing.T) {
		rejectB.Store(true)
		patchSplit(ctx, t, env, 10, 90) // generation 3
		if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed=False", "trafficsplit/checkout", "--timeout=120s"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := programmed("3 False ProxyRejected: Rejected by 1 of 2 proxies"); err != nil || !strings.Contains(out, "replica b's proxy refuses weight 90") {
			t.Fatalf("Programmed = %q, %v; want ProxyRejected by 1 of 2 proxies with the proxy's message", out, err)
		}
	})

	t.Run("a replica that stops takes its report along", func(t *testing.T) {
		b.stop(t)
		var l coordinationv1.Lease
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller-b"}, &l); !apierrors.IsNotFound(err) {
			t.Fatalf("replica b's report after it stopped: %v; want it deleted", err)
		}
		// Generation 3 now reached every remaining proxy: the leader's.
		if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed", "trafficsplit/checkout", "--timeout=120s"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := programmed("3 True Programmed: All 1 proxies"); err != nil {
			t.Fatal(out, err)
		}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller-a"}, &l); err != nil {
			t.Fatalf("the leader's own report: %v", err)
		}
	})
}

func frontendNode(id string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: "frontend",
		dataplane.MetaLabels: map[string]any{"app": "frontend"}})
	return &corev3.Node{Id: id, Metadata: md}
}

// runProxy keeps p connected over conn until ctx ends.
func runProxy(ctx context.Context, t *testing.T, p *xdsload.Proxy, conn *grpc.ClientConn) {
	go p.Keep(ctx, conn, time.Second)
}

func patchSplit(ctx context.Context, t *testing.T, env *testenv.Env, v1, v2 int) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"backends":[{"name":"checkout-v1","weight":%d},{"name":"checkout-v2","weight":%d}]}}`, v1, v2)
	if out, err := env.Kubectl(ctx, nil, "patch", "trafficsplit", "checkout", "-n", "shop", "--type=merge", "-p", patch); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// replica is one weft-controller process, named as a pod would be.
type replica struct {
	name, xds, mon string
	cmd            *exec.Cmd
	logs           *syncBuffer
	exited         chan error
	once           sync.Once
}

func startReplica(t *testing.T, env *testenv.Env, name string) *replica {
	t.Helper()
	r := &replica{name: name, xds: freeAddr(t), mon: freeAddr(t), logs: &syncBuffer{}, exited: make(chan error, 1)}
	r.cmd = exec.Command(bin("weft-controller"), "--kubeconfig", env.Kubeconfig,
		"--monitoring-address", r.mon, "--debug-address", freeAddr(t),
		"--webhook-address", freeAddr(t), "--xds-tls-address", r.xds, "--log-format", "text")
	r.cmd.Env = append(os.Environ(), "POD_NAME="+name)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			out := r.output()
			if len(out) > 30000 {
				out = "…" + out[len(out)-30000:]
			}
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return r
}

func (r *replica) output() string { return r.logs.String() }

func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, r.name+" ready", func() error {
		select {
		case err := <-r.exited:
			r.exited <- err
			t.Fatalf("%s exited before it was ready: %v", r.name, err)
		default:
		}
		body, code, err := httpGet("http://" + r.mon + "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d: %s", code, body)
		}
		return err
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (r *replica) stop(t *testing.T) {
	r.once.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-r.exited:
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM, want 0", r.name, err)
			}
		case <-time.After(60 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
			t.Errorf("%s still running 60s after SIGTERM", r.name)
		}
	})
}
