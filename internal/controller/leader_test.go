package controller

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestLeaderTermsSurviveAPIServerOutage: issue 13 — with
// controller-runtime's election the leader exited when the API server was
// away for longer than the renew deadline, dropping every xDS stream it
// served. leaderTerms ends the term instead (the leader's work stops)
// and, once the API server is back, campaigns and starts a new one; the
// process goes on. A failing runnable still ends Start with its error.
func TestLeaderTermsSurviveAPIServerOutage(t *testing.T) {
	env := testenv.Start(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var starts, running atomic.Int32
	work := manager.RunnableFunc(func(ctx context.Context) error {
		starts.Add(1)
		running.Add(1)
		defer running.Add(-1)
		<-ctx.Done()
		return nil
	})
	l := newLeaderTerms(cs, "weft-system", testr.New(t))
	l.leaseDuration, l.renewDeadline, l.retryPeriod = 4*time.Second, 3*time.Second, 500*time.Millisecond
	l.runnables = []manager.Runnable{work}
	var mu sync.Mutex
	var ended []time.Time
	l.onTerm = func(leading bool) {
		if !leading {
			mu.Lock()
			ended = append(ended, time.Now())
			mu.Unlock()
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Start(runCtx) }()
	testkit.Eventually(t, "the first term", func() error {
		if starts.Load() != 1 || running.Load() != 1 {
			return errors.New("not leading yet")
		}
		return nil
	})

	stopped := time.Now()
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the term ends without the API server", func() error {
		if running.Load() != 0 {
			return errors.New("the leader's work still runs")
		}
		return nil
	})
	mu.Lock()
	t.Logf("the term ended %v after the API server stopped (renew deadline %v)", ended[0].Sub(stopped).Round(time.Millisecond), l.renewDeadline)
	mu.Unlock()
	select {
	case err := <-done:
		t.Fatalf("Start returned (%v) when the term ended; want it to campaign again", err)
	case <-time.After(2 * l.leaseDuration):
	}
	if starts.Load() != 1 {
		t.Fatalf("%d terms while the API server was away; want 1", starts.Load())
	}
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "a new term once the API server is back", func() error {
		if starts.Load() != 2 || running.Load() != 1 {
			return errors.New("not leading again")
		}
		return nil
	})

	// A clean stop ends the term and hands the Lease over.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start after ctx ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start did not return after ctx ended")
	}
	if running.Load() != 0 {
		t.Error("the leader's work still runs after Start returned")
	}
	lease, err := cs.CoordinationV1().Leases("weft-system").Get(ctx, LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease still names %q after a clean stop; want it released", *h)
	}

	// A runnable that fails ends Start with its error, as the manager would.
	failing := newLeaderTerms(cs, "weft-system", testr.New(t))
	failing.leaseDuration, failing.renewDeadline, failing.retryPeriod = l.leaseDuration, l.renewDeadline, l.retryPeriod
	boom := errors.New("boom")
	failing.runnables = []manager.Runnable{work, manager.RunnableFunc(func(context.Context) error { return boom })}
	fctx, fcancel := context.WithTimeout(ctx, time.Minute)
	defer fcancel()
	if err := failing.Start(fctx); !errors.Is(err, boom) {
		t.Errorf("Start with a failing runnable: %v; want %v", err, boom)
	}
}
