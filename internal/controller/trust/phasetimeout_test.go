package trust

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// neverAcks is a proxy that subscribes to its SDS secrets over Delta ADS
// and never ACKs what it is sent (a wedged Envoy), reconnecting whenever
// its stream is closed, as Envoy does.
type neverAcks struct {
	streams atomic.Int32
	closed  atomic.Int32
	mu      sync.Mutex
	reasons []string
}

func startNeverAcks(t *testing.T, ctx context.Context, addr, id, ns, sa string) *neverAcks {
	n := &neverAcks{}
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Error(err)
				return
			}
			if stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx); err == nil {
				md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: sa, dataplane.MetaLabels: map[string]any{"app": sa}})
				if stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: id, Metadata: md}, TypeUrl: resourcev3.SecretType,
					ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}) == nil {
					n.streams.Add(1)
					for {
						if _, err := stream.Recv(); err != nil { // read, never ACK
							if ctx.Err() == nil {
								n.closed.Add(1)
								n.mu.Lock()
								n.reasons = append(n.reasons, err.Error())
								n.mu.Unlock()
							}
							break
						}
					}
				}
			}
			conn.Close()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return n
}

// eventLog records Events as the driver's recorder would send them.
type eventLog struct {
	mu    sync.Mutex
	notes []string
}

func (e *eventLog) Eventf(_ runtime.Object, _ runtime.Object, eventtype, reason, _, note string, args ...interface{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.notes = append(e.notes, eventtype+" "+reason+": "+fmt.Sprintf(note, args...))
}

func (e *eventLog) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.notes...)
}

// TestRotationPhaseTimeout (issue 13, item 3): one authenticated proxy
// whose stream never ACKs its secrets held a root rotation forever. With
// spec.certificates.builtIn.rotationPhaseTimeout (2s here), each phase
// names the proxy it waits for in MeshConfig's status and in what `weft
// ca rotate-root --wait` prints, with its deadline; at the deadline the
// replica closes the proxy's stream (it reconnects, is sent the phase's
// secrets, and still never ACKs); after the grace the phase moves on
// anyway with a Warning Event naming it. The rotation ends with the new
// root, and the proxy that ACKs holds only it.
func TestRotationPhaseTimeout(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	_, c, cs := asController(t, env)
	if _, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName},
		Spec: v1alpha1.MeshConfigSpec{Certificates: v1alpha1.CertificatesConfig{BuiltIn: &v1alpha1.BuiltInCAConfig{RotationPhaseTimeout: "2s"}}}}); err != nil {
		t.Fatal(err)
	}

	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
	reports := startReports(t, ctx, cs, ns, "weft-controller-0")
	_, f, d, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f.idlePoll = time.Second
	d.forceGrace = 2 * time.Second
	events := &eventLog{}
	d.Events = events
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(fctx) }()
	leaderDone := lead(fctx, d, reports.Col)
	t.Cleanup(func() { stop(); <-done; <-leaderDone })
	addr := serveADS(t, ads)

	w := &world{t: t}
	good := w.dial(ctx, addr, "good-0.shop", "shop", "good")
	sctx, stopStuck := context.WithCancel(ctx)
	defer stopStuck()
	stuck := startNeverAcks(t, sctx, addr, "stuck-0.shop", "shop", "stuck")
	testkit.Eventually(t, "both proxies connected, the good one holding its secrets", func() error {
		if chain, bundle := good.held(); chain == nil || bundle == nil || stuck.streams.Load() == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	gen, err := rootrotation.Request(ctx, env.Client, ns) // as the operator
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	var named bool
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	err = rootrotation.Wait(wctx, env.Client, gen, func(p rootrotation.Progress) {
		line := string(p.Status.Phase) + ": " + rootrotation.Describe(p)
		seen = append(seen, line)
		if p.Status.Phase == string(certs.PhaseAddNewRoot) && len(p.Status.WaitingForProxies) == 1 && p.Status.WaitingForProxies[0] == "stuck-0.shop" &&
			p.Status.WaitingForProxyCount == 1 && p.Status.PhaseDeadline != nil && strings.Contains(line, "stuck-0.shop") && strings.Contains(line, "the phase is forced on without them") {
			named = true
		}
	})
	for _, l := range seen {
		t.Log(l)
	}
	if err != nil {
		t.Fatalf("the rotation did not end: %v", err)
	}
	if !named {
		t.Error("AddNewRoot's status never named stuck-0.shop (waitingForProxies, count, phaseDeadline, and in what weft ca rotate-root prints)")
	}
	if n := stuck.closed.Load(); n < 1 {
		t.Error("the never-ACKing proxy's stream was never closed")
	} else {
		stuck.mu.Lock()
		r := stuck.reasons[0]
		stuck.mu.Unlock()
		if !strings.Contains(r, "Unavailable") || !strings.Contains(r, "rotationPhaseTimeout") {
			t.Errorf("its stream closed with %q; want Unavailable naming rotationPhaseTimeout", r)
		}
		t.Logf("the never-ACKing proxy's stream was closed %d times: %s", n, r)
	}
	var forced []string
	for _, e := range events.all() {
		if strings.HasPrefix(e, "Warning RootRotationForced: ") && strings.Contains(e, "stuck-0.shop") && strings.Contains(e, "without the ACK of 1 proxies") {
			forced = append(forced, e)
		}
	}
	if len(forced) != 3 {
		t.Errorf("%d RootRotationForced Events naming stuck-0.shop, want one per phase (3): %q", len(forced), events.all())
	} else {
		t.Log(forced[0])
	}
	var mc v1alpha1.MeshConfig
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
		t.Fatal(err)
	}
	if rs := mc.Status.RootRotation; rs.WaitingForProxyCount != 0 || len(rs.WaitingForProxies) != 0 || rs.PhaseDeadline != nil {
		t.Errorf("after the rotation, status still waits: %+v", rs)
	}
	testkit.Eventually(t, "the proxy that ACKs holds only the new root", func() error {
		return good.holdsOnly(mc.Status.RootRotation.CurrentRoot.SHA256)
	})
}
