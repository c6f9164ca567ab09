// Package localmesh runs a whole weft mesh on one machine, from real
// binaries: etcd and kube-apiserver, weft-controller replicas with their
// injection webhook registered as in a cluster, and proxyless gRPC
// workloads — `weft agent` beside a `weft-demo` server or client — that
// carry real calls over mutual TLS. `make run` (hack/weft-run) and the
// end-to-end tests (test/e2e) share it: one launcher, two uses.
//
// With no kubelet, no kube-proxy and no cluster DNS, the launcher plays
// their parts, and only theirs:
//
//   - kubelet: it creates each workload's Pod (which the API server sends
//     through weft's webhook, so the pod is injected as in a cluster), sets
//     the pod's status (Running, Ready, its IP), mints a pod-bound token for
//     audience weft through TokenRequest, copies the namespace's
//     weft-root-ca ConfigMap into the agent's root file (and keeps it
//     current, as a projected volume would), and starts the agent and the
//     application processes;
//   - EndpointSlice controller: it writes each server's EndpointSlice
//     (every pod shares this machine's address; each serves on its own
//     port, named in its slice);
//   - kube-proxy: a TCP forwarder on one loopback port stands for the
//     weft-controller Service's xDS port and spreads connections over the
//     ready replicas, so agents and applications reconnect to a survivor
//     when a replica dies;
//   - cluster DNS: the applications' bootstrap names the controller as
//     weft-local:///weft-controller.weft-system.svc:PORT, which weft-demo
//     resolves to the forwarder while still verifying the controller's
//     certificate for its Service name.
//
// The API server reaches the webhook as it would in a cluster: through the
// weft-webhook Service (config/webhook, unchanged), resolved to its
// EndpointSlice (kube-apiserver --enable-aggregator-routing), with the
// caBundle the leader writes. EndpointSlices cannot hold loopback
// addresses, so the webhook and the workloads listen on this machine's
// first non-loopback IPv4 address.
package localmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/webhook"
)

// Names a cluster install uses, which the launcher keeps.
const (
	SystemNamespace = "weft-system"
	// ControllerServerName is the name weft-controller's xDS certificate
	// carries (its Service's), which agents and applications verify.
	ControllerServerName = "weft-controller.weft-system.svc"
	// LocalScheme is weft-demo's resolver for the controller's Service name.
	LocalScheme = "weft-local"
)

// Options configure Start. Dir and BinDir are required.
type Options struct {
	// Dir is the run folder: the API server's data, every process's log
	// (Dir/logs) and the workloads' files. The caller removes it.
	Dir string
	// BinDir holds weft-controller, weft and weft-demo.
	BinDir string
	// Replicas of weft-controller; 0 means 1.
	Replicas int
	// XDSTLSAddress is the loopback address that stands for the
	// weft-controller Service's authenticated xDS port; empty picks a free
	// port. The replicas listen on their own free ports behind it.
	XDSTLSAddress string
	// First replica's addresses; empty picks free ports (later replicas
	// always get free ports).
	XDSAddress, MonitoringAddress, DebugAddress string
	// ControllerArgs are added to every replica's command line.
	ControllerArgs []string
	// BeforeControllers, when set, runs once the API server and namespace
	// weft-system exist and before any replica starts (a test that needs
	// an object there first, such as an operator's root CA Secret).
	BeforeControllers func(ctx context.Context, m *Mesh) error
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// BuildProgress receives the output of building kube-apiserver and
	// etcd when they are missing (testenv).
	BuildProgress *os.File
}

// Controller is one weft-controller replica.
type Controller struct {
	*Process
	// Addresses it listens on: plaintext and TLS xDS, /metrics and
	// /readyz, /debug, and the webhook (on HostIP).
	XDS, XDSTLS, Monitoring, Debug, Webhook string
	args                                    []string
	// podMonitoring stands for the pod's monitoring port on the pod
	// network (HostIP), forwarding to Monitoring (syncControllerPods).
	podMonitoring *forwarder
}

// Mesh is a running local mesh.
type Mesh struct {
	Env *testenv.Env
	// HostIP is the address the webhook and every workload listen on.
	HostIP string
	// XDSTLSAddress is the controller Service's xDS port (the forwarder).
	XDSTLSAddress string

	opts      Options
	progress  io.Writer
	clientset *kubernetes.Clientset
	forwarder *forwarder
	rootCtx   context.Context
	rootStop  context.CancelFunc
	rootDone  chan struct{}

	mu          sync.Mutex
	controllers []*Controller
	workloads   map[string]*Workload // by namespace/pod
}

// Start brings up the API server, the replicas and the webhook, and
// returns once a pod in a meshed namespace is injected. Stop it with Stop,
// also after an error (it stops whatever had started).
func Start(ctx context.Context, o Options) (m *Mesh, err error) {
	if o.Dir == "" || o.BinDir == "" {
		return nil, errors.New("localmesh: Options.Dir and Options.BinDir are required")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	m = &Mesh{opts: o, progress: o.Progress, workloads: map[string]*Workload{}, rootDone: make(chan struct{})}
	if m.progress == nil {
		m.progress = io.Discard
	}
	m.rootCtx, m.rootStop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Stop())
			m = nil
		}
	}()
	if m.HostIP, err = HostIP(); err != nil {
		return m, err
	}

	m.say("starting etcd and kube-apiserver in %s", o.Dir)
	if m.Env, err = testenv.New(testenv.Options{Dir: o.Dir, Progress: o.BuildProgress, AggregatorRouting: true}); err != nil {
		return m, err
	}
	if m.clientset, err = kubernetes.NewForConfig(m.Env.Config); err != nil {
		return m, err
	}
	if err := m.createNamespace(ctx, SystemNamespace, nil); err != nil {
		return m, err
	}
	if o.BeforeControllers != nil {
		if err := o.BeforeControllers(ctx, m); err != nil {
			return m, err
		}
	}

	xdsTLS := o.XDSTLSAddress
	if xdsTLS == "" {
		if xdsTLS, err = freeAddr("127.0.0.1"); err != nil {
			return m, err
		}
	}
	if m.forwarder, err = startForwarder(xdsTLS); err != nil {
		return m, fmt.Errorf("the controller Service's xDS address %s: %w", xdsTLS, err)
	}
	m.XDSTLSAddress = xdsTLS

	// config/webhook first, as `kubectl apply -k config/default` creates
	// it with the Deployment: the leader writes its caBundle at start.
	if err := m.applyWebhookConfig(ctx); err != nil {
		return m, err
	}
	for i := range o.Replicas {
		if _, err := m.StartController(ctx, i); err != nil {
			return m, err
		}
	}
	if err := m.waitInjection(ctx); err != nil {
		return m, err
	}
	go m.projectRootCA()
	return m, nil
}

// StartController starts replica i (weft-controller-<i>) and waits until
// it is ready. A replica i that ran before restarts on its old addresses.
func (m *Mesh) StartController(ctx context.Context, i int) (*Controller, error) {
	m.mu.Lock()
	var c *Controller
	if i < len(m.controllers) {
		c = m.controllers[i]
	}
	m.mu.Unlock()
	if c == nil {
		c = &Controller{}
		pick := func(given string) string {
			if given != "" && i == 0 {
				return given
			}
			a, _ := freeAddr("127.0.0.1")
			return a
		}
		c.XDS, c.Monitoring, c.Debug = pick(m.opts.XDSAddress), pick(m.opts.MonitoringAddress), pick(m.opts.DebugAddress)
		c.XDSTLS = pick("")
		var err error
		if c.Webhook, err = freeAddr(m.HostIP); err != nil {
			return nil, err
		}
		podMon, err := freeAddr(m.HostIP)
		if err != nil {
			return nil, err
		}
		if c.podMonitoring, err = startForwarder(podMon); err != nil {
			return nil, err
		}
		c.podMonitoring.setBackends([]string{c.Monitoring})
		c.args = append([]string{"--kubeconfig", m.Env.Kubeconfig,
			"--xds-address", c.XDS, "--xds-tls-address", c.XDSTLS,
			"--monitoring-address", c.Monitoring, "--debug-address", c.Debug,
			"--webhook-address", c.Webhook,
			"--leader-election-namespace", SystemNamespace, "--log-format", "text"}, m.opts.ControllerArgs...)
	}
	name := fmt.Sprintf("weft-controller-%d", i)
	m.say("starting %s (xDS TLS %s, metrics http://%s/metrics)", name, c.XDSTLS, c.Monitoring)
	p, err := startProcess(m.logDir(), name, filepath.Join(m.opts.BinDir, "weft-controller"),
		[]string{"POD_NAME=" + name}, c.args...)
	if err != nil {
		return nil, fmt.Errorf("%w (run 'make build'?)", err)
	}
	c.Process = p
	m.mu.Lock()
	for len(m.controllers) <= i {
		m.controllers = append(m.controllers, nil)
	}
	m.controllers[i] = c
	m.forwarder.setBackends(m.liveXDSLocked())
	m.mu.Unlock()
	if err := m.writeWebhookEndpoints(ctx); err != nil {
		return c, err
	}
	if err := waitHTTP(ctx, "http://"+c.Monitoring+"/readyz", 2*time.Minute, p.Exited()); err != nil {
		return c, fmt.Errorf("%s not ready: %w\n%s", name, err, p.Logs(4000))
	}
	return c, m.syncControllerPods(ctx)
}

// Controllers are the replicas started so far (a stopped one stays, with
// its Process ended).
func (m *Mesh) Controllers() []*Controller {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Controller(nil), m.controllers...)
}

// ControllerGone tells the forwarder, the webhook's endpoints and the
// weft-controller Deployment that a replica has stopped (after Kill or
// Stop), as the endpoints and Deployment controllers would once its pod
// is gone. It also rewrites the webhook's endpoints from the live
// replicas after a test changed them.
func (m *Mesh) ControllerGone(ctx context.Context) error {
	m.mu.Lock()
	m.forwarder.setBackends(m.liveXDSLocked())
	m.mu.Unlock()
	if err := m.writeWebhookEndpoints(ctx); err != nil {
		return err
	}
	return m.syncControllerPods(ctx)
}

func (m *Mesh) liveXDSLocked() []string {
	var out []string
	for _, c := range m.controllers {
		if c != nil && c.Process != nil && c.Err() == nil {
			out = append(out, c.XDSTLS)
		}
	}
	return out
}

// Stop ends every workload, replica and the API server, in that order.
// The run folder stays (the caller removes it).
func (m *Mesh) Stop() error {
	var errs []error
	m.rootStop()
	m.mu.Lock()
	workloads := make([]*Workload, 0, len(m.workloads))
	for _, w := range m.workloads {
		workloads = append(workloads, w)
	}
	controllers := append([]*Controller(nil), m.controllers...)
	m.mu.Unlock()
	for _, w := range workloads {
		errs = append(errs, w.stopProcesses())
	}
	for _, c := range controllers {
		if c != nil && c.Process != nil {
			errs = append(errs, c.Stop())
		}
		if c != nil && c.podMonitoring != nil {
			c.podMonitoring.close()
		}
	}
	if m.forwarder != nil {
		m.forwarder.close()
	}
	if m.Env != nil {
		m.say("stopping etcd and kube-apiserver")
		errs = append(errs, m.Env.Stop())
	}
	return errors.Join(errs...)
}

// Clientset reaches the API server as a cluster admin.
func (m *Mesh) Clientset() *kubernetes.Clientset { return m.clientset }

// LogDir is where every process's log file is.
func (m *Mesh) LogDir() string { return m.logDir() }

func (m *Mesh) logDir() string { return filepath.Join(m.opts.Dir, "logs") }

func (m *Mesh) say(format string, args ...any) {
	fmt.Fprintf(m.progress, "localmesh: "+format+"\n", args...)
}

func (m *Mesh) createNamespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := m.clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// applyWebhookConfig applies config/webhook as an install does: the
// weft-webhook Service and the MutatingWebhookConfiguration that names it.
func (m *Mesh) applyWebhookConfig(ctx context.Context) error {
	m.say("registering the injection webhook (config/webhook) with the API server")
	dir := filepath.Join(m.Env.Root, "config", "webhook")
	for _, f := range []string{"service.yaml", "mutatingwebhookconfiguration.yaml"} {
		if _, err := m.Env.Kubectl(ctx, nil, "apply", "-f", filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}

// waitInjection waits until the leader has written the caBundle and a pod
// is injected (a dry run, so nothing is left behind).
func (m *Mesh) waitInjection(ctx context.Context) error {
	// A pod that asks for injection in a namespace that does not: the
	// second webhook's objectSelector (the first needs a labelled
	// namespace, which the launcher does not create for a probe).
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe", Namespace: "default", Labels: map[string]string{dataplane.LabelInject: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "weft-demo"}}},
	}
	var last error
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		p := probe.DeepCopy()
		last = m.Env.Client.Create(ctx, p, client.DryRunAll)
		if last == nil && p.Annotations[dataplane.AnnotationInjectStatus] == webhook.StatusInjected {
			return nil
		}
		if last == nil {
			last = fmt.Errorf("the probe pod was admitted without injection (annotations %v)", p.Annotations)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("the API server does not inject pods through weft's webhook: %w", last)
}

// writeWebhookEndpoints is the endpoints controller's part for the
// weft-webhook Service: one EndpointSlice with every live replica's
// webhook address (port name https, as the Service names its port).
func (m *Mesh) writeWebhookEndpoints(ctx context.Context) error {
	m.mu.Lock()
	want := map[string]*discoveryv1.EndpointSlice{}
	var names []string
	for i, c := range m.controllers {
		name := fmt.Sprintf("weft-webhook-%d", i)
		names = append(names, name)
		if c == nil || c.Process == nil || c.Err() != nil {
			continue
		}
		_, p, _ := net.SplitHostPort(c.Webhook)
		n, _ := strconv.Atoi(p)
		want[name] = &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: SystemNamespace, Labels: map[string]string{discoveryv1.LabelServiceName: "weft-webhook"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(n)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{m.HostIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
	}
	m.mu.Unlock()
	for _, name := range names {
		if s := want[name]; s != nil {
			if err := m.applySlice(ctx, s); err != nil {
				return err
			}
			continue
		}
		err := m.clientset.DiscoveryV1().EndpointSlices(SystemNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

func (m *Mesh) applySlice(ctx context.Context, s *discoveryv1.EndpointSlice) error {
	cur, err := m.clientset.DiscoveryV1().EndpointSlices(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = m.clientset.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	s.ResourceVersion = cur.ResourceVersion
	_, err = m.clientset.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
	return err
}

// ApplyYAML applies manifests with kubectl, as a user would.
func (m *Mesh) ApplyYAML(ctx context.Context, manifests string) (string, error) {
	return m.Env.Kubectl(ctx, []byte(manifests), "apply", "-f", "-")
}

// serviceYAML is a Service of one HTTP port 80 to the pods' port "http".
func serviceYAML(ns, name string, selector map[string]string) string {
	svc := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
		}}},
	}
	b, _ := yaml.Marshal(svc)
	return string(b)
}

// HostIP is this machine's first up, non-loopback IPv4 address: where the
// webhook and the workloads listen, since EndpointSlices refuse loopback
// addresses.
func HostIP() (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "", errors.New("this machine has no up, non-loopback IPv4 address: EndpointSlices refuse loopback addresses, so the webhook and the workloads have nowhere to listen")
}

// freeAddr is host with a port that was free a moment ago. It never hands
// out the same address twice in one process: the kernel may give a
// just-closed port again, and two listeners on one address fail.
func freeAddr(host string) (string, error) {
	handedMu.Lock()
	defer handedMu.Unlock()
	for {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if !handed[addr] {
			handed[addr] = true
			return addr, nil
		}
	}
}

var (
	handedMu sync.Mutex
	handed   = map[string]bool{}
)

// FreeAddr is a loopback address with a free port (see freeAddr).
func FreeAddr() (string, error) { return freeAddr("127.0.0.1") }

// waitHTTP polls url until it answers 200, the process exits, or timeout.
func waitHTTP(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	last := errors.New("no answer yet")
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
