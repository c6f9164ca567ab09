package proxystatus

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/xds"
)

// ControllerSelector selects weft-controller's pods (config/controller).
var ControllerSelector = client.MatchingLabels{"app.kubernetes.io/name": "weft-controller"}

// FromReplicas asks every running weft-controller pod in namespace,
// through a port-forward to DebugPort (the debug server listens on the
// pod's localhost, which the API server's pod proxy cannot reach), as
// `kubectl port-forward` does: WebSocket first, SPDY when the server does
// not upgrade.
func FromReplicas(ctx context.Context, cfg *rest.Config, c client.Client, namespace string) ([]Replica, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), ControllerSelector); err != nil {
		return nil, fmt.Errorf("listing weft-controller pods in %s: %w", namespace, err)
	}
	var out []Replica
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning {
			out = append(out, Replica{Name: p.Name, Err: fmt.Errorf("pod is %s", p.Status.Phase)})
			continue
		}
		var proxies []xds.ProxyStatus
		err := WithPortForward(ctx, cfg, namespace, p.Name, func(base string) (err error) {
			proxies, err = Fetch(ctx, http.DefaultClient, base)
			return err
		})
		out = append(out, Replica{Name: p.Name, Proxies: proxies, Err: err})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no weft-controller pod in namespace %s (weft check says why)", namespace)
	}
	return out, nil
}

// ControllerPods lists the running weft-controller pods' names.
func ControllerPods(ctx context.Context, c client.Client, namespace string) ([]string, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), ControllerSelector); err != nil {
		return nil, fmt.Errorf("listing weft-controller pods in %s: %w", namespace, err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			out = append(out, p.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running weft-controller pod in namespace %s (weft check says why)", namespace)
	}
	return out, nil
}

// WithPortForward forwards a local port to the pod's DebugPort while fn
// runs with the local base URL ("http://127.0.0.1:PORT").
func WithPortForward(ctx context.Context, cfg *rest.Config, namespace, pod string, fn func(base string) error) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", DebugPort)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("port-forward to %s/%s:%d: %v %s", namespace, pod, DebugPort, err, strings.TrimSpace(errOut.String()))
	case <-ctx.Done():
		return ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return fmt.Errorf("port-forward to %s/%s: no local port: %v", namespace, pod, err)
	}
	return fn(fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local))
}
