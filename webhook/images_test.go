package webhook

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/version"
)

// TestImagePrecedence: the pod's annotation (proxy only), then MeshConfig,
// then the controller's flags (Options), then the defaults, which name this
// build's version and never latest.
func TestImagePrecedence(t *testing.T) {
	for _, d := range []string{DefaultInitImage, DefaultAgentImage, DefaultProxyImage} {
		if strings.HasSuffix(d, ":latest") || !strings.Contains(d, ":") {
			t.Errorf("default image %s names no pinned version", d)
		}
	}
	if want := ":" + version.Version; !strings.HasSuffix(DefaultInitImage, want) || !strings.HasSuffix(DefaultAgentImage, want) {
		t.Errorf("defaults %s, %s do not name this build's version %s", DefaultInitImage, DefaultAgentImage, version.Version)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}}
	pod := func(ann map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Annotations: ann},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		}
	}
	images := func(p *corev1.Pod) map[string]string {
		m := map[string]string{}
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			m[c.Name] = c.Image
		}
		return m
	}
	flags := Options{ProxyImage: "flags/envoy:1", InitImage: "flags/weft-init:1", AgentImage: "flags/weft:1"}
	mc := &v1alpha1.MeshConfig{Spec: v1alpha1.MeshConfigSpec{Sidecar: v1alpha1.SidecarConfig{Image: "mc/envoy:2", InitImage: "mc/weft-init:2", AgentImage: "mc/weft:2", AllowedImages: []string{"pod/envoy:3"}}}}
	proxyless := map[string]string{dataplane.AnnotationProxyless: "grpc"}

	for _, tc := range []struct {
		name                 string
		mc                   *v1alpha1.MeshConfig
		o                    Options
		ann                  map[string]string
		proxy, init_, agent_ string
	}{
		{"defaults", nil, Options{}, nil, DefaultProxyImage, DefaultInitImage, DefaultAgentImage},
		{"flags", nil, flags, nil, "flags/envoy:1", "flags/weft-init:1", "flags/weft:1"},
		{"meshconfig over flags", mc, flags, nil, "mc/envoy:2", "mc/weft-init:2", "mc/weft:2"},
		{"meshconfig without weft images", &v1alpha1.MeshConfig{}, flags, nil, "flags/envoy:1", "flags/weft-init:1", "flags/weft:1"},
		{"annotation over meshconfig", mc, flags, map[string]string{AnnotationProxyImage: "pod/envoy:3"}, "pod/envoy:3", "mc/weft-init:2", "mc/weft:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := Inject(pod(tc.ann), ns, tc.mc, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := images(out)
			if got[dataplane.SidecarContainerName] != tc.proxy || got[dataplane.InitContainerName] != tc.init_ {
				t.Errorf("proxy %q init %q, want %q %q", got[dataplane.SidecarContainerName], got[dataplane.InitContainerName], tc.proxy, tc.init_)
			}
			ann := map[string]string{}
			for k, v := range tc.ann {
				ann[k] = v
			}
			for k, v := range proxyless {
				ann[k] = v
			}
			out, _, err = Inject(pod(ann), ns, tc.mc, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := images(out)[dataplane.AgentContainerName]; got != tc.agent_ {
				t.Errorf("agent %q, want %q", got, tc.agent_)
			}
		})
	}
}
