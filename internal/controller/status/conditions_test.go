package status

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

func TestProgrammedCondition(t *testing.T) {
	for _, tc := range []struct {
		name     string
		accepted bool
		d        Distribution
		known    bool
		status   metav1.ConditionStatus
		reason   string
		message  string
	}{
		{"not accepted", false, Distribution{Generation: 3, Proxies: 2, Acked: 2}, true, metav1.ConditionFalse, v1alpha1.ReasonInvalid, "not accepted"},
		{"nothing pushed yet", true, Distribution{}, false, metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3"},
		{"older generation ACKed", true, Distribution{Generation: 2, Proxies: 2, Acked: 2}, true, metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 3"},
		{"newer generation than translated", true, Distribution{Generation: 4, Proxies: 2, Acked: 2}, true, metav1.ConditionUnknown, v1alpha1.ReasonPending, "generation 4"},
		{"some proxies pending", true, Distribution{Generation: 3, Proxies: 5, Acked: 2}, true, metav1.ConditionUnknown, v1alpha1.ReasonPending, "Waiting for 5 proxies"},
		{"all ACKed", true, Distribution{Generation: 3, Proxies: 5, Acked: 5}, true, metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "All 5 proxies"},
		{"no proxy needs it", true, Distribution{Generation: 3}, true, metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "No connected proxy"},
		{"rejected", true, Distribution{Generation: 3, Proxies: 5, Acked: 4, Rejected: 1, Error: "proxy shop/a: bad route"}, true,
			metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "Rejected by 1 of 5 proxies, which keep their last good configuration: proxy shop/a: bad route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ProgrammedCondition(3, tc.accepted, tc.d, tc.known)
			if c.Type != v1alpha1.ConditionProgrammed || c.Status != tc.status || c.Reason != tc.reason || c.ObservedGeneration != 3 {
				t.Errorf("got %s=%s reason %s gen %d; want %s reason %s gen 3", c.Type, c.Status, c.Reason, c.ObservedGeneration, tc.status, tc.reason)
			}
			if !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q does not contain %q", c.Message, tc.message)
			}
		})
	}
}

var (
	t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Hour))
)

func cond(typ string, status metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: reason, ObservedGeneration: gen}
}

func TestMergePolicyStatusKeepsTransitionTimes(t *testing.T) {
	translated := []metav1.Condition{
		cond(v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted, 1),
		cond(v1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, 1),
	}
	pending := ProgrammedCondition(1, true, Distribution{}, false)
	st := v1alpha1.Status{Conditions: []metav1.Condition{cond("SomeoneElse", metav1.ConditionTrue, "Theirs", 1)}}
	if !mergePolicyStatus(&st, desiredConditions(translated, pending, t0), 1) {
		t.Fatal("first merge reported no change")
	}
	if st.ObservedGeneration != 1 || len(st.Conditions) != 4 {
		t.Fatalf("status = %+v", st)
	}
	// The same again, at a later time: nothing changes.
	if mergePolicyStatus(&st, desiredConditions(translated, pending, t1), 1) {
		t.Fatal("identical merge reported a change")
	}
	// Programmed turns True: only its transition time moves.
	done := ProgrammedCondition(1, true, Distribution{Generation: 1, Proxies: 1, Acked: 1}, true)
	if !mergePolicyStatus(&st, desiredConditions(translated, done, t1), 1) {
		t.Fatal("Programmed change reported no change")
	}
	for _, c := range st.Conditions {
		want := t0
		if c.Type == v1alpha1.ConditionProgrammed {
			want = t1
		}
		if c.Type != "SomeoneElse" && !c.LastTransitionTime.Equal(&want) {
			t.Errorf("%s lastTransitionTime = %v, want %v", c.Type, c.LastTransitionTime, want)
		}
	}
	// A new generation with the same statuses keeps every transition time
	// but updates observedGeneration.
	gen2 := []metav1.Condition{
		cond(v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted, 2),
		cond(v1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, 2),
	}
	if !mergePolicyStatus(&st, desiredConditions(gen2, ProgrammedCondition(2, true, Distribution{Generation: 2}, true), t1.Rfc3339Copy()), 2) {
		t.Fatal("generation change reported no change")
	}
	if st.ObservedGeneration != 2 {
		t.Errorf("observedGeneration = %d", st.ObservedGeneration)
	}
}

func TestDesiredConditionsIgnoresTranslatedProgrammed(t *testing.T) {
	got := desiredConditions([]metav1.Condition{cond(v1alpha1.ConditionProgrammed, metav1.ConditionTrue, "X", 1)},
		ProgrammedCondition(1, true, Distribution{}, false), t0)
	if len(got) != 1 || got[0].Status != metav1.ConditionUnknown {
		t.Errorf("got %+v, want only the writer's Programmed", got)
	}
}

func TestMergeRouteParents(t *testing.T) {
	svc := gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "cart"}
	other := gatewayv1.ParentReference{Name: "public-gateway"}
	gw := gatewayv1.RouteParentStatus{ParentRef: other, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1)}}
	want := []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1)}
	for i := range want {
		want[i].LastTransitionTime = t0
	}

	parents := []gatewayv1.RouteParentStatus{gw}
	if !mergeRouteParents(&parents, []gatewayv1.ParentReference{other, svc}, want) {
		t.Fatal("no change when adding weft's parent")
	}
	if len(parents) != 2 || parents[0].ControllerName != "example.com/gateway" || parents[1].ControllerName != ControllerName ||
		parents[1].ParentRef.Name != "cart" || len(parents[1].Conditions) != 1 {
		t.Fatalf("parents = %+v", parents)
	}
	if mergeRouteParents(&parents, []gatewayv1.ParentReference{other, svc}, want) {
		t.Error("a second identical merge reported a change")
	}
	// Service parent removed from the spec: weft's entry goes, the other stays.
	if !mergeRouteParents(&parents, []gatewayv1.ParentReference{other}, want) {
		t.Fatal("no change when removing weft's parent")
	}
	if len(parents) != 1 || parents[0].ControllerName != "example.com/gateway" {
		t.Fatalf("parents = %+v", parents)
	}
	// No longer the mesh's at all.
	parents = append(parents, gatewayv1.RouteParentStatus{ParentRef: svc, ControllerName: ControllerName})
	if !mergeRouteParents(&parents, []gatewayv1.ParentReference{svc}, nil) || len(parents) != 1 {
		t.Fatalf("parents = %+v, want weft's entry removed", parents)
	}
	// A dropped rule (PartiallyInvalid) is reported, then fixed: the
	// condition goes, since Gateway API sets it only while it is True.
	partial := append(want, cond(translator.ConditionPartiallyInvalid, metav1.ConditionTrue, translator.ReasonUnsupportedValue, 2))
	if !mergeRouteParents(&parents, []gatewayv1.ParentReference{other, svc}, partial) || len(parents) != 2 ||
		meta.FindStatusCondition(parents[1].Conditions, translator.ConditionPartiallyInvalid) == nil {
		t.Fatalf("parents = %+v, want PartiallyInvalid added", parents)
	}
	if !mergeRouteParents(&parents, []gatewayv1.ParentReference{other, svc}, want) ||
		meta.FindStatusCondition(parents[1].Conditions, translator.ConditionPartiallyInvalid) != nil {
		t.Fatalf("parents = %+v, want PartiallyInvalid removed", parents)
	}
	var empty []gatewayv1.RouteParentStatus
	if mergeRouteParents(&empty, nil, nil) {
		t.Error("change reported for nothing")
	}
}

func ptr[T any](v T) *T { return &v }

// 12r: a RetryPolicy's ProxylessLimited is present only while True; once
// the policy no longer asks what proxyless clients cannot do, it goes.
func TestMergePolicyStatusRemovesProxylessLimited(t *testing.T) {
	base := []metav1.Condition{
		cond(v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted, 1),
		cond(v1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, 1),
	}
	limited := append(append([]metav1.Condition{}, base...), cond(translator.ConditionProxylessLimited, metav1.ConditionTrue, translator.ReasonUnsupportedByGRPC, 1))
	var st v1alpha1.Status
	if !mergePolicyStatus(&st, limited, 1) || meta.FindStatusCondition(st.Conditions, translator.ConditionProxylessLimited) == nil {
		t.Fatalf("status = %+v, want ProxylessLimited", st)
	}
	if !mergePolicyStatus(&st, base, 1) || meta.FindStatusCondition(st.Conditions, translator.ConditionProxylessLimited) != nil {
		t.Fatalf("status = %+v, want ProxylessLimited removed", st)
	}
}
