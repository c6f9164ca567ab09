package store

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestStoreLocality: a proxy's zone is its Pod's Node's topology labels
// (a metadata-only Node informer), or, without a Node zone, the pod's own
// topology label; a Node's relabelling is seen; an unknown pod has none.
// Node events make no batch (Nodes are no translator input).
func TestStoreLocality(t *testing.T) {
	pod := func(name, node string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	}
	nodeA := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{
		dataplane.LabelTopologyRegion: "eu-west", dataplane.LabelTopologyZone: "eu-west-1a"}}}
	h := start(t, func(ctx context.Context, c client.Client) {
		for _, o := range []client.Object{
			namespace("shop"), nodeA,
			&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-plain"}},
			pod("on-a", "node-a", map[string]string{dataplane.LabelTopologyZone: "stale"}),
			pod("on-plain", "node-plain", map[string]string{dataplane.LabelTopologyZone: "pod-zone"}),
			pod("unscheduled", "", nil),
		} {
			if err := c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	})
	h.next("the initial snapshot", func(b Batch) bool { return b.Changes.Full })
	for _, c := range []struct{ pod, region, zone string }{
		{"on-a", "eu-west", "eu-west-1a"}, // the Node's labels win over the pod's
		{"on-plain", "", "pod-zone"},      // a Node without a zone: the pod's label
		{"unscheduled", "", ""},
		{"no-such-pod", "", ""},
	} {
		if r, z := h.store.Locality("shop", c.pod); r != c.region || z != c.zone {
			t.Errorf("%s: region %q zone %q, want %q %q", c.pod, r, z, c.region, c.zone)
		}
	}
	nodeA.Labels[dataplane.LabelTopologyZone] = "eu-west-1b"
	if err := h.c.Update(h.ctx, nodeA); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "node-a's new zone seen", func() bool {
		_, z := h.store.Locality("shop", "on-a")
		return z == "eu-west-1b"
	})
	select {
	case b := <-h.batches:
		t.Errorf("a Node change made a batch: %+v", b.Changes)
	case <-time.After(300 * time.Millisecond):
	}
}
