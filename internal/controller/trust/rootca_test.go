package trust_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/internal/controller/trust"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestPublisher runs the publisher as weft-controller (config/rbac applied,
// ServiceAccount impersonated) with the controller's own trimmed Pod cache.
func TestPublisher(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}
	cfg := env.AsController(t)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	store.MustAddToScheme(scheme)
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                 scheme,
		Logger:                 logr.Discard(),
		Cache:                  store.CacheOptions(cache.Options{}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := trust.NewRootPublisher(mgr, trust.RootPublisherOptions{Resync: 300 * time.Millisecond}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(pub); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	rootKey := client.ObjectKey{Namespace: builtin.DefaultNamespace, Name: builtin.DefaultSecretName}
	root := &corev1.Secret{}
	testkit.Eventually(t, "the root CA Secret", func() error { return c.Get(ctx, rootKey, root) })
	want := string(root.Data["ca.crt"])

	configMap := func(ns string) (*corev1.ConfigMap, error) {
		cm := &corev1.ConfigMap{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: dataplane.RootCAConfigMap}, cm)
		return cm, err
	}
	published := func(ns, want string) func() error {
		return func() error {
			cm, err := configMap(ns)
			if err != nil {
				return err
			}
			if cm.Data[trust.RootCAKey] != want {
				return fmt.Errorf("%s/%s %s is not the trust bundle", ns, cm.Name, trust.RootCAKey)
			}
			return nil
		}
	}

	t.Run("a newly labelled namespace gets the ConfigMap", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}
		if err := c.Update(ctx, ns); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "ConfigMap in shop", published("shop", want))
	})

	t.Run("a deleted or edited ConfigMap comes back", func(t *testing.T) {
		cm, err := configMap("shop")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, cm); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "ConfigMap recreated", func() error {
			got, err := configMap("shop")
			if err == nil && got.UID == cm.UID {
				return fmt.Errorf("still the deleted ConfigMap")
			}
			if err != nil {
				return err
			}
			return published("shop", want)()
		})
		got, _ := configMap("shop")
		got.Data[trust.RootCAKey] = "tampered"
		if err := c.Update(ctx, got); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "ConfigMap restored", published("shop", want))
	})

	t.Run("a namespace with an injected pod gets it; others do not", func(t *testing.T) {
		for _, n := range []string{"tools", "plain"} {
			if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []*corev1.Pod{
			{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Namespace: "tools"}, Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: dataplane.SidecarContainerName, Image: "envoy", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)}},
				Containers:     []corev1.Container{{Name: "app", Image: "app"}},
			}},
			{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "plain"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}},
		} {
			if err := c.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		testkit.Eventually(t, "ConfigMap in tools", published("tools", want))
		// The pods were created in this order; give the other namespace
		// a moment more, then check it stayed empty.
		time.Sleep(time.Second)
		if _, err := configMap("plain"); err == nil {
			t.Error("a namespace without meshed pods got the ConfigMap")
		}
	})

	t.Run("a changed root is republished", func(t *testing.T) {
		other, err := builtin.NewRoot("cluster.local", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sec := &corev1.Secret{}
		if err := c.Get(ctx, rootKey, sec); err != nil {
			t.Fatal(err)
		}
		// A rotation in progress: the bundle trusts the old and new roots.
		sec.Data["ca.crt"] = append(append([]byte{}, sec.Data["ca.crt"]...), certs.EncodeCertificatesPEM([]*x509.Certificate{other.Cert})...)
		if err := c.Update(ctx, sec); err != nil {
			t.Fatal(err)
		}
		next := string(sec.Data["ca.crt"])
		testkit.Eventually(t, "shop republished", published("shop", next))
		testkit.Eventually(t, "tools republished", published("tools", next))
	})
}

func ptr[T any](v T) *T { return &v }
