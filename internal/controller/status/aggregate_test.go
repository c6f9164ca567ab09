package status

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// TestAggregate checks what the leader writes for generation 3 from the
// replicas' reports (the leader's own first, then its peers').
func TestAggregate(t *testing.T) {
	at := func(replica string, gen int64, proxies, acked, rejected int, err string) Report {
		return Report{Replica: replica, Known: true, Distribution: Distribution{Generation: gen, Proxies: proxies, Acked: acked, Rejected: rejected, Error: err}}
	}
	notYet := func(replica string) Report { return Report{Replica: replica} }
	for _, tc := range []struct {
		name    string
		reports []Report
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{"no report at all", nil,
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed to the proxies."},
		{"one replica, all ACKed", []Report{at("a", 3, 2, 2, 0, "")},
			metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "All 2 proxies"},
		{"one replica, waiting", []Report{at("a", 3, 2, 1, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "Waiting for 2 proxies"},
		{"every replica ACKed: the counts add up", []Report{at("a", 3, 2, 2, 0, ""), at("b", 3, 5, 5, 0, "")},
			metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "All 7 proxies"},
		{"the leader's proxies ACKed, a peer's not yet", []Report{at("a", 3, 2, 2, 0, ""), at("b", 3, 1, 0, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "Waiting for 3 proxies to acknowledge generation 3"},
		{"a peer's proxies ACKed, the leader's not yet", []Report{at("a", 3, 1, 0, 0, ""), at("b", 3, 4, 4, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "Waiting for 5 proxies"},
		{"a peer with no affected proxy at this generation adds nothing", []Report{at("a", 3, 2, 2, 0, ""), at("b", 3, 0, 0, 0, "")},
			metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "All 2 proxies"},
		{"no replica has an affected proxy", []Report{at("a", 3, 0, 0, 0, ""), at("b", 3, 0, 0, 0, "")},
			metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "No connected proxy"},
		{"a peer has not translated the policy yet (a new policy)", []Report{at("a", 3, 2, 2, 0, ""), notYet("b")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed to the proxies of controller replica b."},
		{"a peer still at the older generation, its proxies ACKed that one", []Report{at("a", 3, 2, 2, 0, ""), at("b", 2, 3, 3, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed to the proxies of controller replica b."},
		{"a peer at the older generation with no affected proxy may have some at this one", []Report{at("a", 3, 2, 2, 0, ""), at("b", 2, 0, 0, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed to the proxies of controller replica b."},
		{"this replica lagging names none", []Report{{Known: false}, notYet("b")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed to the proxies."},
		{"the first lagging replica is named", []Report{at("a", 3, 2, 2, 0, ""), at("b", 2, 1, 1, 0, ""), notYet("c")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "proxies of controller replica b."},
		{"a peer ahead of the leader's translation", []Report{at("a", 3, 2, 2, 0, ""), at("b", 4, 1, 1, 0, "")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 4 to be translated"},
		{"a rejection on a peer shows", []Report{at("a", 3, 2, 2, 0, ""), at("b", 3, 3, 1, 1, "route: no cluster x")},
			metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "Rejected by 1 of 5 proxies, which keep their last good configuration: route: no cluster x"},
		{"a rejection shows while another replica lags", []Report{notYet("a"), at("b", 2, 1, 1, 0, ""), at("c", 3, 2, 0, 2, "bad weight")},
			metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "Rejected by 2 of 2 proxies, which keep their last good configuration: bad weight"},
		{"rejections on several replicas add up; the first replica's error is quoted", []Report{at("a", 3, 2, 1, 1, "first"), at("b", 3, 2, 0, 2, "second")},
			metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "Rejected by 3 of 4 proxies, which keep their last good configuration: first"},
		{"the error comes from a replica that rejected", []Report{at("a", 3, 2, 2, 0, "stale text"), at("b", 3, 1, 0, 1, "second")},
			metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "configuration: second"},
		{"a rejection of an older generation says nothing about this one", []Report{at("a", 3, 2, 2, 0, ""), at("b", 2, 1, 0, 1, "old")},
			metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3 to be pushed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, known := Aggregate(3, tc.reports)
			c := ProgrammedCondition(3, true, d, known)
			if c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) {
				t.Errorf("Programmed = %s %s %q; want %s %s containing %q", c.Status, c.Reason, c.Message, tc.status, tc.reason, tc.message)
			}
		})
	}
}

// TestAggregateOneReportIsTheReport: with a single replica, aggregation
// changes nothing.
func TestAggregateOneReportIsTheReport(t *testing.T) {
	for _, d := range []Distribution{
		{Generation: 3, Proxies: 4, Acked: 4},
		{Generation: 3, Proxies: 4, Acked: 1},
		{Generation: 3, Proxies: 4, Acked: 2, Rejected: 1, Error: "x"},
		{Generation: 2, Proxies: 4, Acked: 4},
		{Generation: 5, Proxies: 1},
		{Generation: 3},
	} {
		for _, known := range []bool{true, false} {
			got, gotKnown := Aggregate(3, []Report{{Known: known, Distribution: d}})
			want := ProgrammedCondition(3, true, d, known)
			if c := ProgrammedCondition(3, true, got, gotKnown); c != want {
				t.Errorf("%+v known=%v: aggregated to %+v, want %+v", d, known, c, want)
			}
		}
	}
}
