package store

import (
	"encoding/json"
	"maps"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// The controller translates the Pods its cache holds, which TransformPod
// trimmed: the translation must be the one whole Pods give. The simulator's
// shop mesh (every kind of pod the data-path tests walk) and a pod that
// excludes a port from capture are translated both ways.
func TestTransformPodKeepsWhatTheTranslatorReads(t *testing.T) {
	var data []byte
	for _, f := range []string{"shop.in.yaml", "exporter.yaml"} {
		b, err := os.ReadFile("../../../dataplane/sim/testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, b...), "\n---\n"...)
	}
	whole, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	trimmed, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(trimmed.Pods) < 5 {
		t.Fatalf("%d pods in the shop mesh; the test needs its pods", len(trimmed.Pods))
	}
	for i, p := range trimmed.Pods {
		o, err := TransformPod(p)
		if err != nil {
			t.Fatal(err)
		}
		trimmed.Pods[i] = o.(*corev1.Pod)
	}
	want, got := translator.Translate(whole), translator.Translate(trimmed)
	// The model as its JSON, which carries every exported field.
	asLines := func(m *ir.Mesh) []string {
		b, err := json.MarshalIndent(m, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(string(b), "\n")
	}
	if diff := cmp.Diff(asLines(want.Mesh), asLines(got.Mesh)); diff != "" {
		t.Errorf("the model from trimmed pods differs from the one from whole pods (-whole +trimmed):\n%s", diff)
	}

	// Issue 12l through the cache: the excluded port is not meshed (the
	// application reads plaintext there), the captured one is.
	meshed := map[int32]bool{}
	s := got.Mesh.Service(ir.ServiceKey{Namespace: "shop", Name: "exporter"})
	if s == nil {
		t.Fatal("no shop/exporter in the model")
	}
	for _, p := range s.Ports {
		for _, e := range p.Endpoints {
			meshed[e.Port] = e.Meshed
		}
	}
	if m, ok := meshed[9100]; !ok || m {
		t.Errorf("exporter's endpoint on its excluded port 9100: meshed=%v (found %v), want false", m, ok)
	}
	if m, ok := meshed[8080]; !ok || !m {
		t.Errorf("exporter's endpoint on its captured port 8080: meshed=%v (found %v), want true", m, ok)
	}
}

// Pods of one template share their trimmed container list and their
// labels, and appending to one pod's list does not change another's.
func TestTransformPodSharesContainerLists(t *testing.T) {
	pod := func(name string, initArgs ...string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "weft-init", Image: "weft-init", Args: initArgs}, {Name: "weft-proxy", Image: "envoy"}},
				Containers:     []corev1.Container{{Name: "app", Image: "app:1"}},
			},
		}
	}
	trim := func(p *corev1.Pod) *corev1.Pod {
		o, err := TransformPod(p)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*corev1.Pod)
	}
	a, b := trim(pod("a", "--exclude-inbound-ports=9100")), trim(pod("b", "--exclude-inbound-ports=9100"))
	c := trim(pod("c", "--exclude-inbound-ports=9200"))
	if len(a.Spec.InitContainers) != 2 || a.Spec.InitContainers[0].Args[0] != "--exclude-inbound-ports=9100" || a.Spec.InitContainers[0].Image != "" {
		t.Fatalf("trimmed init containers: %+v", a.Spec.InitContainers)
	}
	if a.Spec.Containers != nil {
		t.Errorf("the app container was kept: %+v", a.Spec.Containers)
	}
	if &a.Spec.InitContainers[0] != &b.Spec.InitContainers[0] {
		t.Error("two pods of one template have lists of their own")
	}
	if &a.Spec.InitContainers[0] == &c.Spec.InitContainers[0] {
		t.Error("pods with different weft-init arguments share a list")
	}
	// Arguments that spell another list's key do not get its list.
	d, e := trim(pod("d", "a", "b")), trim(pod("e", "a\x001:b"))
	if len(e.Spec.InitContainers[0].Args) != 1 || len(d.Spec.InitContainers[0].Args) != 2 {
		t.Errorf("weft-init arguments %q and %q were confused", d.Spec.InitContainers[0].Args, e.Spec.InitContainers[0].Args)
	}
	// Labels are shared by pods that have the same ones.
	labelled := func(name string, labels map[string]string) *corev1.Pod {
		p := pod(name)
		p.Labels = labels
		return trim(p)
	}
	f := labelled("f", map[string]string{"app": "web", "pod-template-hash": "5d9f"})
	g := labelled("g", map[string]string{"app": "web", "pod-template-hash": "5d9f"})
	h := labelled("h", map[string]string{"app": "web", "pod-template-hash": "77aa"})
	if reflect.ValueOf(f.Labels).UnsafePointer() != reflect.ValueOf(g.Labels).UnsafePointer() {
		t.Error("two pods with the same labels have maps of their own")
	}
	if h.Labels["pod-template-hash"] != "77aa" || f.Labels["pod-template-hash"] != "5d9f" {
		t.Errorf("labels confused: %v, %v", f.Labels, h.Labels)
	}
	// A large map is the pod's own.
	large := map[string]string{"app": "web", "config": strings.Repeat("x", maxInternedBytes)}
	if l1, l2 := labelled("l1", large), labelled("l2", maps.Clone(large)); reflect.ValueOf(l1.Labels).UnsafePointer() == reflect.ValueOf(l2.Labels).UnsafePointer() {
		t.Error("labels over maxInternedBytes were interned")
	}
	grown := append(a.Spec.InitContainers, corev1.Container{Name: "x"})
	grown[0].Name = "changed"
	if b.Spec.InitContainers[0].Name != "weft-init" || len(b.Spec.InitContainers) != 2 {
		t.Errorf("appending to one pod's list changed another's: %+v", b.Spec.InitContainers)
	}
}

// A table that fills starts over: it never holds more than maxInterned
// entries, and what it returns stays right.
func TestInternTableIsBounded(t *testing.T) {
	var tab internTable[string]
	for i := range 3 * maxInterned {
		k := strconv.Itoa(i)
		if v := tab.get(k, func() string { return "v" + k }); v != "v"+k {
			t.Fatalf("get(%s) = %s", k, v)
		}
		if len(tab.m) > maxInterned {
			t.Fatalf("%d entries, bound %d", len(tab.m), maxInterned)
		}
	}
}
