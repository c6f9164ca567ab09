package replicas

import (
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestSectionLapses: what a report carries of a section, as its owner sets
// it and then stops, on a fake clock (nothing is written: the client
// points nowhere and is never called).
func TestSectionLapses(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(cs, nil, Options{Namespace: ns, Name: "replica-a", Heartbeat: 5 * time.Second, Deadline: 20 * time.Second, Clock: clk}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"distribution", "Trust", "a/b", ""} {
		if _, err := p.Section(bad); err == nil {
			t.Errorf("Section(%q) accepted", bad)
		}
	}
	trust, err := p.Section("trust")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := p.Section("trust"); again.key != trust.key || len(p.sections) != 1 {
		t.Error("a second Section call made another section")
	}
	if got := p.want(); len(got) != 0 || trust.Current() != "" {
		t.Errorf("before the first Set: report %v, Current %q; want nothing", got, trust.Current())
	}
	trust.Set(`{"state":"a"}`)
	clk.Step(15 * time.Second)
	if got := p.want(); got["weft.dev/trust"] != `{"state":"a"}` || len(got) != 1 {
		t.Errorf("15s after Set: report %v", got)
	}
	// An unchanged value set again counts as fresh.
	trust.Set(`{"state":"a"}`)
	clk.Step(15 * time.Second)
	if got := p.want(); got["weft.dev/trust"] != `{"state":"a"}` || trust.Current() != `{"state":"a"}` {
		t.Errorf("15s after the second Set: report %v", got)
	}
	// The owner stops setting it: past the deadline, the report leaves it
	// out (the leader then reads "not current"), though the Lease's
	// heartbeat would go on.
	clk.Step(6 * time.Second)
	if got := p.want(); len(got) != 0 || trust.Current() != "" {
		t.Errorf("21s after the last Set: report %v, Current %q; want the section left out", got, trust.Current())
	}
	trust.Set(`{"state":"b"}`)
	if got := p.want(); got["weft.dev/trust"] != `{"state":"b"}` {
		t.Errorf("after setting it again: report %v", got)
	}
}

// TestPublisherSaysWhenItCannotWrite: a replica whose report cannot be
// written for longer than the deadline says so (weft_replica_report_stale,
// and an error log): the leader no longer counts it, although it may still
// serve proxies. The API server here refuses connections; the clock is
// fake.
func TestPublisherSaysWhenItCannotWrite(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(cs, nil, Options{Namespace: ns, Name: "replica-cut-off", Heartbeat: 5 * time.Second, Deadline: 20 * time.Second, Clock: clk}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	staleGauge.Set(0) // the gauge is the process's; other tests' publishers may have set it
	failures := func() float64 { return testutil.ToFloat64(reportWrites.WithLabelValues("error")) }
	before := failures()
	run(t, p)
	testkit.Eventually(t, "the first write fails and a retry waits", func() error {
		if failures() == before || !clk.HasWaiters() {
			return fmt.Errorf("failures %v, waiting %v", failures()-before, clk.HasWaiters())
		}
		return nil
	})
	if v := testutil.ToFloat64(staleGauge); v != 0 {
		t.Errorf("weft_replica_report_stale = %v right after the first failure; want 0", v)
	}
	// Past the deadline, the next failed retry says so.
	clk.Step(25 * time.Second)
	testkit.Eventually(t, "weft_replica_report_stale", func() error {
		if v := testutil.ToFloat64(staleGauge); v != 1 {
			if clk.HasWaiters() {
				clk.Step(time.Second)
			}
			return fmt.Errorf("weft_replica_report_stale = %v", v)
		}
		return nil
	})
}
