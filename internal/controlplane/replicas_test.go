package controlplane

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestReplicaReports: a report counts until its Lease's renew time plus
// its duration, then no more, and after reportGC it is listed for
// deletion; the leader-election Lease is never listed.
func TestReplicaReports(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// The leader-election Lease lives beside the reports.
	if err := env.Client.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: LeaseName}}); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(t0)
	a := newReplicaReports(env.Client, ns, "a", clk)
	b := newReplicaReports(env.Client, ns, "b", clk)
	if err := a.publish(ctx, "trust", `{"state":"x"}`); err != nil {
		t.Fatal(err)
	}
	clk.Step(20 * time.Second)
	if err := b.publish(ctx, "trust", `{"state":"y"}`); err != nil {
		t.Fatal(err)
	}
	if err := a.publish(ctx, "other", "z"); err != nil { // another topic renews a too
		t.Fatal(err)
	}
	live, dead, err := a.list(ctx, "trust")
	if err != nil || len(live) != 2 || len(dead) != 0 || live[0].Replica != "a" || live[0].Value != `{"state":"x"}` || live[1].Value != `{"state":"y"}` {
		t.Fatalf("list = %+v, dead %v, %v", live, dead, err)
	}
	clk.Step(45 * time.Second) // a renewed at +20s, b at +20s: both expired at +50s
	if err := b.publish(ctx, "trust", `{"state":"y2"}`); err != nil {
		t.Fatal(err)
	}
	live, dead, _ = a.list(ctx, "trust")
	if len(live) != 1 || live[0].Replica != "b" || live[0].Value != `{"state":"y2"}` || len(dead) != 0 {
		t.Fatalf("after a stopped renewing: live %+v, dead %v", live, dead)
	}
	clk.Step(reportGC)
	if err := b.publish(ctx, "trust", `{"state":"y3"}`); err != nil {
		t.Fatal(err)
	}
	live, dead, _ = b.list(ctx, "trust")
	if len(live) != 1 || len(dead) != 1 || dead[0] != "weft-replica-a" {
		t.Fatalf("long after: live %+v, dead %v", live, dead)
	}
	b.forget(ctx, dead)
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-replica-a"}, &coordinationv1.Lease{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a's report was not deleted: %v", err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: LeaseName}, &coordinationv1.Lease{}); err != nil {
		t.Fatalf("the leader-election Lease: %v", err)
	}
}
