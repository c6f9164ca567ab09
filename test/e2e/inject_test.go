package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/webhook"
)

// TestInjectionWebhook registers weft's real webhook configuration
// (config/webhook) with a real API server, pointed at the injection handler
// served over HTTPS on loopback, and creates pods the way users and
// controllers do.
func TestInjectionWebhook(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	ctrllog.SetLogger(logr.Discard())

	srv, caPEM := serveWebhook(t, webhook.NewHandler(c, webhook.Scheme, webhook.Options{InitImage: "ghcr.io/weftmesh/weft-init:test"}))
	registerWebhook(t, ctx, c, "https://"+srv.Addr+webhook.Path, caPEM)

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tools"}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a Deployment's pod in a labelled namespace gets the sidecar", func(t *testing.T) {
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "checkout"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "checkout"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "app", Image: "example.com/checkout:1",
						Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstrName("http")}}},
					}}},
				},
			},
		}
		if err := c.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		// There is no controller-manager: create the pod as the
		// ReplicaSet controller would, from the template, with a
		// generated name and no namespace in the object.
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "checkout-5d8f7c9b4-", Namespace: "shop", Labels: dep.Spec.Template.Labels},
			Spec:       *dep.Spec.Template.Spec.DeepCopy(),
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		got := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
			t.Fatal(err)
		}
		if got.Annotations[dataplane.AnnotationInjectStatus] != webhook.StatusInjected {
			t.Errorf("status annotation %q", got.Annotations[dataplane.AnnotationInjectStatus])
		}
		names := containerNames(got.Spec.InitContainers)
		if len(names) != 2 || names[0] != dataplane.InitContainerName || names[1] != dataplane.SidecarContainerName {
			t.Fatalf("init containers %v, want weft-init then weft-proxy", names)
		}
		proxy := got.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("the API server did not keep the native sidecar: restartPolicy %v", proxy.RestartPolicy)
		}
		if p := got.Spec.Containers[0].ReadinessProbe.HTTPGet; p.Path != "/app-health/app/readyz" || p.Port.IntValue() != 15021 {
			t.Errorf("readiness probe not rewritten: %+v", p)
		}
		if got.Annotations[dataplane.AnnotationAppProbes] == "" {
			t.Error("no weft.dev/app-probes annotation")
		}
	})

	t.Run("a proxyless gRPC pod gets the certificate agent instead", func(t *testing.T) {
		pod := testPod("greeter", "shop")
		pod.Annotations = map[string]string{dataplane.AnnotationProxyless: "grpc"}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatalf("the API server refused the injected pod: %v", err)
		}
		if names := containerNames(pod.Spec.InitContainers); len(names) != 1 || names[0] != dataplane.AgentContainerName {
			t.Fatalf("init containers %v, want only %s", names, dataplane.AgentContainerName)
		}
		if p := pod.Spec.InitContainers[0].RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
			t.Errorf("weft-agent is not a native sidecar: restartPolicy %v", p)
		}
		if env := pod.Spec.Containers[0].Env; len(env) != 1 || env[0].Name != webhook.EnvGRPCBootstrap {
			t.Errorf("the application's environment %v lacks %s", env, webhook.EnvGRPCBootstrap)
		}
	})

	t.Run("opted-out and invalid pods", func(t *testing.T) {
		out := testPod("opted-out", "shop")
		out.Annotations = map[string]string{dataplane.LabelInject: "false"}
		if err := c.Create(ctx, out); err != nil {
			t.Fatal(err)
		}
		if len(out.Spec.InitContainers) != 0 || out.Annotations[dataplane.AnnotationInjectStatus] != "skipped: OptedOut" {
			t.Errorf("opted-out pod: init containers %v, status %q", containerNames(out.Spec.InitContainers), out.Annotations[dataplane.AnnotationInjectStatus])
		}
		bad := testPod("bad", "shop")
		bad.Annotations = map[string]string{webhook.AnnotationExcludeOutboundPorts: "postgres"}
		err := c.Create(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), "annotation weft.dev/exclude-outbound-ports") {
			t.Errorf("invalid annotation: got %v, want a rejection naming the annotation", err)
		}
	})

	t.Run("an unlabelled namespace is left alone unless a pod opts in", func(t *testing.T) {
		plain := testPod("plain", "tools")
		if err := c.Create(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if len(plain.Spec.InitContainers) != 0 || plain.Annotations[dataplane.AnnotationInjectStatus] != "" {
			t.Errorf("pod in an unlabelled namespace was touched: %v %v", containerNames(plain.Spec.InitContainers), plain.Annotations)
		}
		in := testPod("opted-in", "tools")
		in.Labels = map[string]string{dataplane.LabelInject: "true"}
		if err := c.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		if in.Annotations[dataplane.AnnotationInjectStatus] != webhook.StatusInjected {
			t.Errorf("opted-in pod: status %q", in.Annotations[dataplane.AnnotationInjectStatus])
		}
	})

	t.Run("the legacy sidecar is a valid pod", func(t *testing.T) {
		p := testPod("legacy", "tools")
		grace := int64(20)
		p.Spec.TerminationGracePeriodSeconds = &grace
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tools", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
		out, r, err := webhook.Inject(p, ns, nil, webhook.Options{LegacySidecar: true})
		if err != nil || !r.Injected {
			t.Fatalf("%+v %v", r, err)
		}
		// Dry run: the API server validates (preStop sleep included) but
		// stores nothing; the webhook is not called in tools.
		if err := c.Create(ctx, out, client.DryRunAll); err != nil {
			t.Errorf("the API server rejects the legacy sidecar: %v", err)
		}
	})

	t.Run("kube-system pods are created while the webhook is down", func(t *testing.T) {
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		sys := testPod("coredns-test", "kube-system")
		if err := c.Create(ctx, sys); err != nil {
			t.Errorf("kube-system pod refused while the webhook is down: %v", err)
		}
		// ...whereas a meshed namespace fails closed rather than starting
		// a pod outside the mesh.
		err := c.Create(ctx, testPod("while-down", "shop"))
		if err == nil || !strings.Contains(err.Error(), "inject.weft.dev") {
			t.Errorf("pod in a meshed namespace while the webhook is down: got %v, want a webhook failure", err)
		}
	})
}

func testPod(name, ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// serveWebhook serves the handler over HTTPS on loopback with a certificate
// made for the test, and returns the server and the CA the API server must
// trust.
func serveWebhook(t *testing.T, h *webhook.Handler) (*http.Server, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weft-webhook test"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, webhook.NewWebhook(h))
	srv := &http.Server{Addr: l.Addr().String(), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, certPEM
}

// registerWebhook creates config/webhook's MutatingWebhookConfiguration,
// pointed at url instead of the in-cluster Service.
func registerWebhook(t *testing.T, ctx context.Context, c client.Client, url string, caPEM []byte) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config/webhook/mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		t.Fatalf("config/webhook: %v", err)
	}
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	}
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// The API server picks up webhook configurations asynchronously: wait
	// until a pod in a meshed namespace is injected (dry run).
	probeNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
	if err := c.Create(ctx, probeNS); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "webhook registration", func() error {
		p := testPod("probe", "webhook-probe")
		if err := c.Create(ctx, p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[dataplane.AnnotationInjectStatus] != webhook.StatusInjected {
			return errString("webhook not called yet")
		}
		return nil
	})
}

type errString string

func (e errString) Error() string { return string(e) }

func intstrName(s string) intstr.IntOrString { return intstr.FromString(s) }
