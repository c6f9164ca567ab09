package replicas

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
)

const ns = "weft-system"

// recorder stands in for the status writer: it records what it is told.
type recorder struct {
	mu      sync.Mutex
	resyncs int
	changed []translator.PolicyKey
}

func (r *recorder) ProgrammedChanged(keys ...translator.PolicyKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changed = append(r.changed, keys...)
}

func (r *recorder) Resync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs++
}

func (r *recorder) state() (int, []translator.PolicyKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resyncs, slices.Clone(r.changed)
}

// source is a replica's distribution that the test changes, counting how
// often the publisher reads it.
type source struct {
	mu    sync.Mutex
	snap  Snapshot
	reads int
}

func (s *source) get() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return s.snap
}

func (s *source) set(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap = snap
}

func (s *source) readCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// run starts a runnable until the returned stop is called; stop waits for
// it to return.
func run(t *testing.T, r interface{ Start(context.Context) error }) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Start: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestReports runs two publishers and the leader's collector against a real
// API server, as weft-controller's ServiceAccount with config/rbac applied
// (so the RBAC is checked by the real authorizer).
func TestReports(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	cfg := env.AsController(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	leases := admin.CoordinationV1().Leases(ns)
	log := testr.New(t)

	t.Run("writes are coalesced and only made for a change", func(t *testing.T) {
		// A replica with an hour-long heartbeat, so that every write it
		// makes is for a change (no collector runs yet to expire it).
		src := &source{snap: Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 1, Proxies: 1}}}}
		pub, err := NewPublisher(cs, src.get, Options{Namespace: ns, Name: "replica-q", MinInterval: 500 * time.Millisecond, Heartbeat: time.Hour, Deadline: 2 * time.Hour}, log.WithName("replica-q"))
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, pub)
		var first *coordinationv1.Lease
		testkit.Eventually(t, "the report Lease", func() error {
			first, err = leases.Get(ctx, "replica-q", metav1.GetOptions{})
			return err
		})
		if first.Labels[LabelKey] != LabelValue || first.Spec.HolderIdentity == nil || *first.Spec.HolderIdentity != "replica-q" ||
			first.Spec.RenewTime == nil || first.Spec.LeaseDurationSeconds == nil || *first.Spec.LeaseDurationSeconds != 7200 {
			t.Errorf("report Lease = %+v", first)
		}
		w := watchLease(ctx, t, admin, "replica-q", first.ResourceVersion)

		// Nothing changed: the publisher reads its source and writes nothing.
		reads := src.readCount()
		pub.Changed()
		testkit.Eventually(t, "the publisher looked", func() error {
			if src.readCount() == reads {
				return errors.New("not yet")
			}
			return nil
		})
		// A burst of changes: at most one write per MinInterval.
		start := time.Now()
		for i := 0; i < 50; i++ {
			src.set(Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 2, Proxies: 1, Acked: i % 2}}})
			pub.Changed()
			time.Sleep(10 * time.Millisecond)
		}
		src.set(Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 2, Proxies: 1, Acked: 1}}})
		pub.Changed()
		var last *coordinationv1.Lease
		testkit.Eventually(t, "the last state published", func() error {
			last, err = leases.Get(ctx, "replica-q", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got, err := Decode(last.Annotations[Annotation]); err != nil || got.Policies[split] != (status.Distribution{Generation: 2, Proxies: 1, Acked: 1}) {
				return fmt.Errorf("report = %+v, %v", got, err)
			}
			return nil
		})
		elapsed := time.Since(start)
		writes := w(last.ResourceVersion)
		t.Logf("%d writes for 51 changes over %v", writes, elapsed)
		// The burst's writes, spaced by MinInterval, plus the last one;
		// none for the unchanged Changed() before.
		if limit := int(elapsed/(500*time.Millisecond)) + 2; writes < 1 || writes > limit {
			t.Errorf("%d writes over %v; want between 1 and %d", writes, elapsed, limit)
		}
		stop()
		if _, err := leases.Get(ctx, "replica-q", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the Lease after a clean stop: %v; want NotFound", err)
		}
	})

	const deadline = 6 * time.Second
	rec := &recorder{}
	col, err := NewCollector(cs, Options{Namespace: ns, Name: "leader-0", Deadline: deadline}, log.WithName("collector"))
	if err != nil {
		t.Fatal(err)
	}
	col.SetNotifier(rec)
	if got := col.PeerReports(split); len(got) != 1 || got[0].Known {
		t.Fatalf("before the reports are read: PeerReports = %+v; want one report that is not Known", got)
	}

	// The leader's own report is in memory; its Lease is not read back.
	srcLeader := &source{snap: Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 1, Proxies: 1, Acked: 0}}}}
	pubLeader, err := NewPublisher(cs, srcLeader.get, Options{Namespace: ns, Name: "leader-0", Heartbeat: time.Second, Deadline: deadline}, log.WithName("leader-0"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, pubLeader)

	// Replica a: a live replica with a proxy that has not ACKed yet.
	srcA := &source{snap: Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 1, Proxies: 1}}}}
	pubA, err := NewPublisher(cs, srcA.get, Options{Namespace: ns, Name: "replica-a", Heartbeat: time.Second, Deadline: deadline}, log.WithName("replica-a"))
	if err != nil {
		t.Fatal(err)
	}
	stopA := run(t, pubA)
	testkit.Eventually(t, "replica a's report Lease", func() error {
		_, err := leases.Get(ctx, "replica-a", metav1.GetOptions{})
		return err
	})

	stopCollector := run(t, col)
	stopLeading := run(t, col.Leading())
	testkit.Eventually(t, "the collector counts replica a", func() error {
		got := col.PeerReports(split)
		if len(got) != 1 || got[0].Replica != "replica-a" || !got[0].Known || got[0].Distribution != (status.Distribution{Generation: 1, Proxies: 1}) {
			return fmt.Errorf("PeerReports = %+v", got)
		}
		return nil
	})
	// The collector answers once synced and then tells the writer: poll.
	testkit.Eventually(t, "the writer resynced once the reports were read", func() error {
		if n, _ := rec.state(); n < 1 {
			return errors.New("no resync")
		}
		return nil
	})

	t.Run("a change reaches the leader, naming the policy", func(t *testing.T) {
		srcA.set(Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 1, Proxies: 1, Acked: 1}, retry: {Generation: 4}}})
		pubA.Changed()
		testkit.Eventually(t, "the ACK in the leader's view", func() error {
			if got := col.PeerReports(split); len(got) != 1 || got[0].Acked != 1 {
				return fmt.Errorf("PeerReports = %+v", got)
			}
			if _, keys := rec.state(); !slices.Contains(keys, split) || !slices.Contains(keys, retry) {
				return fmt.Errorf("the writer was told about %v", keys)
			}
			return nil
		})
	})

	t.Run("a section rides in the same Lease and reaches the leader, its own included", func(t *testing.T) {
		trust, err := pubA.Section("trust")
		if err != nil {
			t.Fatal(err)
		}
		trust.Set(`{"state":"x"}`)
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		if err := trust.Written(wctx); err != nil {
			t.Fatalf("Written: %v", err)
		}
		// Written returned: the value is in the Lease, beside the
		// distribution, already.
		l, err := leases.Get(ctx, "replica-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Annotations["weft.dev/trust"] != `{"state":"x"}` || l.Annotations[Annotation] == "" {
			t.Fatalf("replica a's Lease annotations = %v", l.Annotations)
		}
		testkit.Eventually(t, "the section in the leader's view", func() error {
			got, ok := col.Sections("trust")
			if !ok || got["replica-a"] != `{"state":"x"}` {
				return fmt.Errorf("Sections = %v, %v", got, ok)
			}
			// The leader's own report counts for sections (it has none).
			if v, ok := got["leader-0"]; !ok || v != "" {
				return fmt.Errorf("Sections = %v: want leader-0 without the section", got)
			}
			return nil
		})
	})

	t.Run("after Refresh, a report the watch may not have delivered is known", func(t *testing.T) {
		holder := "replica-new"
		fresh := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "replica-new", Namespace: ns, Labels: map[string]string{LabelKey: LabelValue},
			Annotations: map[string]string{"weft.dev/trust": `{"state":""}`}}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}
		if _, err := leases.Create(ctx, fresh, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := col.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		// No polling: Refresh guarantees it, whatever the watch did.
		if got, _ := col.Sections("trust"); got["replica-new"] != `{"state":""}` {
			t.Errorf("right after Refresh: Sections = %v; want replica-new", got)
		}
		if err := leases.Delete(ctx, "replica-new", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the deleted report gone", func() error {
			if got, _ := col.Sections("trust"); len(got) != 2 {
				return fmt.Errorf("Sections = %v", got)
			}
			return nil
		})
	})

	t.Run("a section its owner stops setting leaves the report, which stays live", func(t *testing.T) {
		// Replica a's trust section was set once above; its heartbeat goes
		// on every second. After the deadline (6s) its publisher leaves
		// the section out: the leader sees replica a, without it.
		testkit.Eventually(t, "the section left out", func() error {
			got, ok := col.Sections("trust")
			if v, live := got["replica-a"]; !ok || !live || v != "" {
				return fmt.Errorf("Sections = %v, %v; want replica-a live without the section", got, ok)
			}
			return nil
		})
		l, err := leases.Get(ctx, "replica-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := l.Annotations["weft.dev/trust"]; ok || l.Annotations[Annotation] == "" {
			t.Errorf("replica a's Lease annotations = %v; want the distribution without the section", l.Annotations)
		}
	})

	t.Run("heartbeats keep a replica counted past the deadline", func(t *testing.T) {
		first, err := leases.Get(ctx, "leader-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the leader's own report renewed without a change", func() error {
			l, err := leases.Get(ctx, "leader-0", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !l.Spec.RenewTime.After(first.Spec.RenewTime.Time) {
				return fmt.Errorf("renewTime still %v", l.Spec.RenewTime)
			}
			return nil
		})
		// The leader's own report is never one of its peers.
		for _, r := range col.PeerReports(split) {
			if r.Replica == "leader-0" {
				t.Errorf("the leader counts its own Lease: %+v", r)
			}
		}
	})

	t.Run("a replica that died is ignored after the deadline and its Lease deleted", func(t *testing.T) {
		// A report left by a replica that was killed: never renewed.
		seconds := int32(6)
		holder := "replica-dead"
		dead := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "replica-dead", Namespace: ns, Labels: map[string]string{LabelKey: LabelValue},
			Annotations: map[string]string{Annotation: Encode(Snapshot{Proxies: 2, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 2, Proxies: 2, Rejected: 1, Error: "old"}}})}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds, RenewTime: &metav1.MicroTime{Time: time.Now()}}}
		if _, err := leases.Create(ctx, dead, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the dead replica counted at first", func() error {
			if got := col.PeerReports(split); len(got) != 2 || got[1].Replica != "replica-dead" || got[1].Rejected != 1 {
				return fmt.Errorf("PeerReports = %+v", got)
			}
			return nil
		})
		resyncs, _ := rec.state()
		testkit.Eventually(t, "the dead replica's Lease deleted", func() error {
			_, err := leases.Get(ctx, "replica-dead", metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("Get = %v", err)
			}
			return nil
		})
		// The collector drops the report from its view as the watch
		// delivers the deletion: wait for it rather than race it.
		testkit.Eventually(t, "replica a's report alone after the deadline", func() error {
			if got := col.PeerReports(split); len(got) != 1 || got[0].Replica != "replica-a" {
				return fmt.Errorf("PeerReports = %+v", got)
			}
			return nil
		})
		if n, _ := rec.state(); n <= resyncs {
			t.Error("the writer was not resynced when the dead replica expired")
		}
		// Replicas that renew their reports stay counted.
		for _, name := range []string{"replica-a", "leader-0"} {
			if _, err := leases.Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("%s's report: %v", name, err)
			}
		}
	})

	t.Run("a replica that stops deletes its report", func(t *testing.T) {
		resyncs, _ := rec.state()
		stopA()
		if _, err := leases.Get(ctx, "replica-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("replica a's Lease after a clean stop: %v; want NotFound", err)
		}
		testkit.Eventually(t, "the leader stops counting replica a", func() error {
			if got := col.PeerReports(split); len(got) != 0 {
				return fmt.Errorf("PeerReports = %+v", got)
			}
			if n, _ := rec.state(); n <= resyncs {
				return errors.New("no resync")
			}
			return nil
		})
	})

	stopLeading()
	stopCollector()
	if got := col.PeerReports(split); len(got) != 1 || got[0].Known {
		t.Errorf("after the collector stopped: PeerReports = %+v; want one report that is not Known", got)
	}
}

// TestFollowerKnowsADeadLeadersReport (issue 13; 077: "a follower that
// kept watching the reports would know at election time"): the collector
// watches on every replica, so a replica elected after the leader died
// has seen the dead leader's report stop changing since it died. Before,
// its collector started at the election and counted the dead report —
// holding every policy changed meanwhile Pending, naming the dead
// replica — for a whole deadline more (20 s in production: 35-40 s after
// the kill in all). The dead leader's heartbeat is played by the test
// (a killed process leaves its Lease); the election comes two deadlines
// after the kill (production: the 15 s leader Lease, under the 20 s
// deadline): the report must be gone from the new leader's view by then,
// and its Lease deleted only once this replica leads.
func TestFollowerKnowsADeadLeadersReport(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.AsController(t))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	leases := admin.CoordinationV1().Leases(ns)
	const deadline = 6 * time.Second
	col, err := NewCollector(cs, Options{Namespace: ns, Name: "replica-b", Deadline: deadline}, testr.New(t).WithName("replica-b"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	col.SetNotifier(rec)
	run(t, col) // a follower: no Leading

	// The old leader's report, renewed every second until it is killed.
	holder := "replica-old"
	report := func(i int) map[string]string {
		return map[string]string{Annotation: Encode(Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{split: {Generation: 1, Proxies: 1, Acked: i % 2}}})}
	}
	l, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: holder, Namespace: ns, Labels: map[string]string{LabelKey: LabelValue}, Annotations: report(0)},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		time.Sleep(time.Second)
		l.Annotations = report(i)
		if l, err = leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "the follower counts the old leader's report", func() error {
		if got := col.PeerReports(split); len(got) != 1 || got[0].Replica != holder || got[0].Acked != 1 {
			return fmt.Errorf("PeerReports = %+v", got)
		}
		return nil
	})
	killed := time.Now()

	// Two deadlines later this replica is elected.
	time.Sleep(2 * deadline)
	if _, err := leases.Get(ctx, holder, metav1.GetOptions{}); err != nil {
		t.Fatalf("the dead report's Lease before this replica leads: %v; want it kept (only a leader deletes)", err)
	}
	elected := time.Now()
	if got := col.PeerReports(split); len(got) != 0 {
		t.Fatalf("at the election, %v after the kill (deadline %v): PeerReports = %+v; want the dead leader's report no longer counted", elected.Sub(killed), deadline, got)
	}
	run(t, col.Leading())
	testkit.Eventually(t, "the dead report's Lease deleted by the new leader", func() error {
		if _, err := leases.Get(ctx, holder, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("Get = %v", err)
		}
		return nil
	})
	t.Logf("the dead leader's report was no longer counted at the election (%v after the kill); its Lease deleted %v after the election",
		elected.Sub(killed).Round(time.Millisecond), time.Since(elected).Round(time.Millisecond))
}

// watchLease counts the modifications of a Lease after resourceVersion
// rv; the returned function waits until the watch has delivered
// resourceVersion until, stops it and returns the count.
func watchLease(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, rv string) func(until string) int {
	w, err := cs.CoordinationV1().Leases(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n, seen := 0, map[string]bool{}
	go func() {
		for ev := range w.ResultChan() {
			if l, ok := ev.Object.(*coordinationv1.Lease); ok {
				mu.Lock()
				n++
				seen[l.ResourceVersion] = true
				mu.Unlock()
			}
		}
	}()
	return func(until string) int {
		defer w.Stop()
		testkit.Eventually(t, "the watch delivers the last write", func() error {
			mu.Lock()
			defer mu.Unlock()
			if !seen[until] {
				return fmt.Errorf("resourceVersion %s not seen", until)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}
