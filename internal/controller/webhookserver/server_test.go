package webhookserver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/controller/webhookserver"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/webhook"
)

// controllerConfig is env's config, impersonating weft-controller's
// ServiceAccount, after config/rbac has been applied: the components run
// with the rights the install gives them.
func controllerConfig(t *testing.T, env *testenv.Env) *rest.Config {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}
	cfg := env.AsController(t)
	return cfg
}

// TestWebhookServer runs the server and the caBundle reconciler as
// weft-controller, registers config/webhook's configuration unchanged but
// for the Service port, and points the Service at the server (an
// ExternalName to 127.0.0.1 stands in for kube-proxy), so the API server
// calls the webhook exactly as in a cluster: by Service, with TLS server
// name weft-webhook.weft-system.svc, trusting only the caBundle weft wrote.
func TestWebhookServer(t *testing.T) {
	env := testenv.Start(t)
	cfg := controllerConfig(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client

	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                 webhook.Scheme,
		Logger:                 logr.Discard(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	const certLifetime = 8 * time.Second
	srv, err := webhookserver.New(mgr, webhookserver.Options{
		Address:      "127.0.0.1:0",
		CertLifetime: certLifetime,
		Resync:       300 * time.Millisecond,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(srv); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(srv.CABundleReconciler()); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	portN, _ := strconv.Atoi(port)

	registerWebhook(t, ctx, c, int32(portN))
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
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

	caBundle := func() ([]byte, error) {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: webhookserver.DefaultWebhookConfiguration}, mwc); err != nil {
			return nil, err
		}
		for _, w := range mwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, mwc.Webhooks[0].ClientConfig.CABundle) || len(w.ClientConfig.CABundle) == 0 {
				return nil, fmt.Errorf("webhook %s: caBundle %d bytes", w.Name, len(w.ClientConfig.CABundle))
			}
		}
		return mwc.Webhooks[0].ClientConfig.CABundle, nil
	}
	var bundle []byte
	testkit.EventuallyWithin(t, "the caBundle written by the reconciler", time.Minute, func() error {
		bundle, err = caBundle()
		return err
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("caBundle holds no certificate")
	}

	var firstSerial string
	t.Run("AdmissionReview over TLS verified against the caBundle", func(t *testing.T) {
		var resp *admissionv1.AdmissionReview
		testkit.EventuallyWithin(t, "admission review", 30*time.Second, func() error {
			var err error
			var serial string
			resp, serial, err = review(srv.Addr().String(), pool, testPod("direct", "shop"))
			firstSerial = serial
			return err
		})
		if !resp.Response.Allowed || resp.Response.PatchType == nil || len(resp.Response.Patch) == 0 {
			t.Fatalf("response %+v, want allowed with a JSON patch", resp.Response)
		}
		if !bytes.Contains(resp.Response.Patch, []byte(`"`+dataplane.SidecarContainerName+`"`)) {
			t.Errorf("patch does not add %s: %s", dataplane.SidecarContainerName, resp.Response.Patch)
		}
	})

	t.Run("a pod created through the API server gets the sidecar", func(t *testing.T) {
		i := 0
		testkit.EventuallyWithin(t, "injection through the registration", time.Minute, func() error {
			i++
			p := testPod(fmt.Sprintf("app-%d", i), "shop")
			if err := c.Create(ctx, p); err != nil {
				return err
			}
			if p.Annotations[dataplane.AnnotationInjectStatus] != webhook.StatusInjected {
				return fmt.Errorf("pod %s not injected: %v", p.Name, p.Annotations)
			}
			if !hasContainer(p.Spec.InitContainers, dataplane.SidecarContainerName) {
				return fmt.Errorf("pod %s has no %s", p.Name, dataplane.SidecarContainerName)
			}
			return nil
		})
	})

	t.Run("the serving certificate is renewed without a restart", func(t *testing.T) {
		testkit.EventuallyWithin(t, "a renewed certificate", 2*certLifetime, func() error {
			_, serial, err := review(srv.Addr().String(), pool, testPod("renewed", "shop"))
			if err != nil {
				return err
			}
			if serial == firstSerial {
				return fmt.Errorf("still serving serial %s", serial)
			}
			return nil
		})
		if b, err := caBundle(); err != nil || !bytes.Equal(b, bundle) {
			t.Errorf("caBundle changed with a leaf renewal (%v)", err)
		}
		if err := c.Create(ctx, testPod("after-renewal", "shop")); err != nil {
			t.Errorf("creating a pod after renewal: %v", err)
		}
	})

	t.Run("an emptied caBundle is repaired", func(t *testing.T) {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: webhookserver.DefaultWebhookConfiguration}, mwc); err != nil {
			t.Fatal(err)
		}
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = nil
		}
		if err := c.Update(ctx, mwc); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyWithin(t, "caBundle repaired", 30*time.Second, func() error {
			b, err := caBundle()
			if err == nil && !bytes.Equal(b, bundle) {
				err = fmt.Errorf("a different caBundle")
			}
			return err
		})
	})

	// With cert-manager: the configuration carries the CA injector
	// annotation, cert-manager's Certificate (config/components/webhook-cert-manager)
	// writes Secret weft-webhook-tls and its CA injector writes caBundle.
	// The test plays both of cert-manager's parts (cert-manager's issuance
	// is tested with its real controllers in certs/certmanager): the server
	// must switch to that Secret, and the reconciler must leave caBundle to
	// the injector.
	t.Run("cert-manager owns the certificate when the annotation is set", func(t *testing.T) {
		ca := testpki.NewCA(t)
		dir := t.TempDir()
		files := ca.IssueDNS(t, dir, webhookserver.Options{}.DNSNames())
		certPEM, _ := os.ReadFile(files.Cert)
		keyPEM, _ := os.ReadFile(files.Key)
		if err := c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: webhookserver.DefaultCertManagerSecretName, Namespace: "weft-system"},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.PEM},
		}); err != nil {
			t.Fatal(err)
		}
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: webhookserver.DefaultWebhookConfiguration}, mwc); err != nil {
			t.Fatal(err)
		}
		if mwc.Annotations == nil {
			mwc.Annotations = map[string]string{}
		}
		mwc.Annotations[webhookserver.CAInjectorAnnotation] = "weft-system/weft-webhook"
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = ca.PEM // as the CA injector would
		}
		if err := c.Update(ctx, mwc); err != nil {
			t.Fatal(err)
		}
		cmPool := x509.NewCertPool()
		cmPool.AppendCertsFromPEM(ca.PEM)
		testkit.EventuallyWithin(t, "the server serving cert-manager's certificate", time.Minute, func() error {
			_, _, err := review(srv.Addr().String(), cmPool, testPod("cert-manager", "shop"))
			return err
		})
		time.Sleep(time.Second) // a few reconciler resyncs
		if b, err := caBundle(); err != nil || !bytes.Equal(b, ca.PEM) {
			t.Fatalf("the reconciler overwrote the CA injector's caBundle (%v)", err)
		}
		if err := c.Create(ctx, testPod("through-cert-manager", "shop")); err != nil {
			t.Fatalf("creating a pod through the cert-manager-certified webhook: %v", err)
		}
	})
}

// review posts an AdmissionReview for pod over TLS, verifying the server
// as the API server does, and returns the response and the serial of the
// certificate served.
// TestCABundleForALateConfiguration: the configuration is created after
// the leader started (an Argo CD sync that applies it in a later wave, or
// `make run`'s order) and gets its caBundle within seconds, not after the
// next Resync (an hour here, a minute by default): while a named
// configuration is missing the reconciler looks again with a backoff from
// one second.
func TestCABundleForALateConfiguration(t *testing.T) {
	env := testenv.Start(t)
	cfg := controllerConfig(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mgr, err := manager.New(cfg, manager.Options{
		Scheme: webhook.Scheme, Logger: logr.Discard(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := webhookserver.New(mgr, webhookserver.Options{Address: "127.0.0.1:0", Resync: time.Hour}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(srv.CABundleReconciler()); err != nil {
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
	// The reconciler has run once and found nothing to write: it created
	// the CA, which it does on its first pass.
	testkit.EventuallyWithin(t, "the webhook CA Secret", time.Minute, func() error {
		return env.Client.Get(ctx, client.ObjectKey{Namespace: webhookserver.DefaultNamespace, Name: webhookserver.DefaultCASecretName}, &corev1.Secret{})
	})
	time.Sleep(3 * time.Second) // let its backoff grow past the first steps
	registerWebhook(t, ctx, env.Client, 443)
	created := time.Now()
	testkit.EventuallyWithin(t, "the caBundle of a configuration created after the leader started", 30*time.Second, func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: webhookserver.DefaultWebhookConfiguration}, mwc); err != nil {
			return err
		}
		if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return errors.New("no caBundle yet")
		}
		return nil
	})
	t.Logf("caBundle written %s after the configuration was created", time.Since(created).Round(100*time.Millisecond))
}

func review(addr string, roots *x509.CertPool, pod *corev1.Pod) (*admissionv1.AdmissionReview, string, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, "", err
	}
	in := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "1",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace,
			Name:      pod.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, "", err
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "weft-webhook.weft-system.svc", MinVersion: tls.VersionTLS12,
	}}}
	resp, err := hc.Post("https://"+addr+webhook.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	out := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, "", err
	}
	if out.Response == nil {
		return nil, "", fmt.Errorf("no response: %s", data)
	}
	return out, resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
}

// registerWebhook creates config/webhook's configuration as shipped (no
// caBundle), with the Service port set to the test server's, and the
// Service as an ExternalName to loopback.
func registerWebhook(t *testing.T, ctx context.Context, c client.Client, port int32) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config/webhook/mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, mwc); err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		svc := mwc.Webhooks[i].ClientConfig.Service
		if svc == nil || svc.Name != webhookserver.DefaultServiceName || svc.Namespace != webhookserver.DefaultNamespace || len(mwc.Webhooks[i].ClientConfig.CABundle) != 0 {
			t.Fatalf("config/webhook: webhook %s does not call Service weft-system/weft-webhook without a caBundle", mwc.Webhooks[i].Name)
		}
		svc.Port = &port
	}
	if err := c.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: webhookserver.DefaultServiceName, Namespace: webhookserver.DefaultNamespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
}

func testPod(name, ns string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
}

func hasContainer(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		if c.Name == name {
			return true
		}
	}
	return false
}

func testLogger(t *testing.T) logr.Logger {
	return logr.New(&tlog{t: t})
}

// tlog sends the components' logs to the test log.
type tlog struct {
	t    *testing.T
	name string
}

func (l *tlog) Init(logr.RuntimeInfo)  {}
func (l *tlog) Enabled(level int) bool { return level == 0 }
func (l *tlog) Info(_ int, msg string, kv ...any) {
	l.t.Logf("%s: %s %v", l.name, msg, kv)
}
func (l *tlog) Error(err error, msg string, kv ...any) {
	l.t.Logf("%s: ERROR %s: %v %v", l.name, msg, err, kv)
}
func (l *tlog) WithValues(...any) logr.LogSink { return l }
func (l *tlog) WithName(n string) logr.LogSink { return &tlog{t: l.t, name: l.name + "/" + n} }
