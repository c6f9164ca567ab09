package localmesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/webhook"
	"github.com/weftmesh/weft/xds"
)

// Spec is a proxyless gRPC workload: one pod running `weft agent` and a
// weft-demo server (Services non-empty) or client (Targets non-empty).
type Spec struct {
	Namespace, Pod, ServiceAccount string
	Labels                         map[string]string
	// Services whose EndpointSlices list this pod (a server). Each Service
	// must name its port "http" with targetPort "http", which this pod
	// declares as its container port.
	Services []string
	// FailPercent is the share of calls the server fails with UNAVAILABLE
	// at start (Workload.SetFailPercent changes it).
	FailPercent int
	// Targets are the Services a client calls, NAME.NAMESPACE:PORT.
	Targets []string
	// Rate is the client's calls per second to each target (default 20).
	Rate float64
	// Concurrency is how many calls a client keeps in flight per target at
	// most (default 1); rates of hundreds per second need several.
	Concurrency int
	// Refused marks a client whose calls are meant to fail (denied by an
	// AuthPolicy, refused by a server): it is ready once a call to every
	// target ended, whatever its code, instead of once one succeeded.
	Refused bool
}

// Workload is a running Spec.
type Workload struct {
	Spec
	// Port is the server's port on the mesh's HostIP (0 for a client).
	Port int
	// Admin is the application's /ready, /metrics (and the server's /fail).
	Admin string
	// Dir holds its credentials, certificates and bootstrap.
	Dir        string
	Agent, App *Process

	m   *Mesh
	pod *corev1.Pod
}

func (w *Workload) key() string { return w.Namespace + "/" + w.Pod }

// StartWorkload does the kubelet's and the EndpointSlice controller's
// part for one pod: create it (through the webhook), report it running,
// start its agent with a pod-bound token, then its application, then
// publish its endpoints. It returns once the application is ready: a
// server serves (weft sent its listener), a client had every target
// answer once.
func (m *Mesh) StartWorkload(ctx context.Context, s Spec) (*Workload, error) {
	if s.Rate == 0 {
		s.Rate = 20
	}
	if (len(s.Services) == 0) == (len(s.Targets) == 0) {
		return nil, fmt.Errorf("workload %s/%s: give Services (a server) or Targets (a client), not both or neither", s.Namespace, s.Pod)
	}
	w := &Workload{Spec: s, m: m, Dir: filepath.Join(m.opts.Dir, "workloads", s.Namespace+"-"+s.Pod)}
	var err error
	if w.Admin, err = freeAddr("127.0.0.1"); err != nil {
		return nil, err
	}
	if len(s.Services) > 0 {
		addr, err := freeAddr(m.HostIP)
		if err != nil {
			return nil, err
		}
		_, p, _ := net.SplitHostPort(addr)
		w.Port, _ = strconv.Atoi(p)
	}
	m.mu.Lock()
	if _, dup := m.workloads[w.key()]; dup {
		m.mu.Unlock()
		return nil, fmt.Errorf("workload %s already runs", w.key())
	}
	m.workloads[w.key()] = w
	m.mu.Unlock()
	if err := w.start(ctx); err != nil {
		return w, fmt.Errorf("workload %s: %w", w.key(), errors.Join(err, w.Stop(ctx)))
	}
	return w, nil
}

func (w *Workload) start(ctx context.Context) error {
	m, cs := w.m, w.m.clientset
	if _, err := cs.CoreV1().ServiceAccounts(w.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: w.ServiceAccount}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: w.Pod, Namespace: w.Namespace, Labels: w.Labels,
			Annotations: map[string]string{dataplane.AnnotationProxyless: "grpc"}},
		Spec: corev1.PodSpec{ServiceAccountName: w.ServiceAccount, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "weft-demo"}}},
	}
	if w.Port != 0 {
		pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: int32(w.Port), Protocol: corev1.ProtocolTCP}}
	}
	created, err := cs.CoreV1().Pods(w.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if st := created.Annotations[dataplane.AnnotationInjectStatus]; st != webhook.StatusInjected {
		m.say("%s was not injected (%s=%q): is its namespace labelled %s=%s?", w.key(), dataplane.AnnotationInjectStatus, st, dataplane.LabelInject, dataplane.InjectEnabled)
	}
	// Running with its IP, not yet ready: the EndpointSlice controller
	// lists it as not ready, and weft (which resolves a named target port
	// through the pod's endpoints) can describe its listener.
	w.pod = created
	if err := w.setReady(ctx, false); err != nil {
		return err
	}

	// The kubelet's projected volume: a token for audience weft bound to
	// the pod, and the namespace's weft-root-ca.
	tr, err := cs.CoreV1().ServiceAccounts(w.Namespace).CreateToken(ctx, w.ServiceAccount, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:      []string{xds.TokenAudience},
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: created.Name, UID: created.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	root, err := m.rootCA(ctx, w.Namespace)
	if err != nil {
		return err
	}
	creds := filepath.Join(w.Dir, "credentials")
	if err := os.MkdirAll(creds, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"token": []byte(tr.Status.Token), "root-cert.pem": root} {
		if err := os.WriteFile(filepath.Join(creds, name), data, 0o600); err != nil {
			return err
		}
	}
	agentReady, err := freeAddr("127.0.0.1")
	if err != nil {
		return err
	}
	_, xdsPort, _ := net.SplitHostPort(m.XDSTLSAddress)
	bootstrap := filepath.Join(w.Dir, "grpc-bootstrap.json")
	w.Agent, err = startProcess(m.logDir(), w.Namespace+"-"+w.Pod+"-agent", filepath.Join(m.opts.BinDir, "weft"), nil, "agent",
		"--xds-address", m.XDSTLSAddress, "--xds-server-name", ControllerServerName,
		"--root-cert", filepath.Join(creds, "root-cert.pem"), "--token-file", filepath.Join(creds, "token"),
		"--out", filepath.Join(w.Dir, "certs"), "--bootstrap", bootstrap,
		"--grpc-xds-address", LocalScheme+":///"+ControllerServerName+":"+xdsPort, "--refresh-interval", "1s",
		"--pod-name", w.Pod, "--namespace", w.Namespace, "--service-account", w.ServiceAccount,
		"--pod-ips", m.HostIP, "--labels", labelString(w.Labels),
		"--ready-address", agentReady, "--log-format", "text")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+agentReady+"/ready", 2*time.Minute, w.Agent.Exited()); err != nil {
		return fmt.Errorf("its agent has no certificate: %w\n%s", err, w.Agent.Logs(4000))
	}

	env := []string{"GRPC_XDS_BOOTSTRAP=" + bootstrap}
	demo := filepath.Join(m.opts.BinDir, "weft-demo")
	if w.Port != 0 {
		w.App, err = startProcess(m.logDir(), w.Namespace+"-"+w.Pod, demo, env, "serve",
			"--listen", net.JoinHostPort(m.HostIP, strconv.Itoa(w.Port)), "--service", serviceOf(w.Spec), "--pod", w.Pod,
			"--admin", w.Admin, "--fail-percent", strconv.Itoa(w.FailPercent))
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, "http://"+w.Admin+"/ready", 2*time.Minute, w.App.Exited()); err != nil {
			return fmt.Errorf("its server never served: %w\n%s", err, w.App.Logs(4000))
		}
		return w.setReady(ctx, true)
	}
	args := []string{"call", "--admin", w.Admin, "--rate", strconv.FormatFloat(w.Rate, 'f', -1, 64)}
	if w.Concurrency > 1 {
		args = append(args, "--concurrency", strconv.Itoa(w.Concurrency))
	}
	if w.Refused {
		args = append(args, "--ready-on", "any")
	}
	for _, t := range w.Targets {
		args = append(args, "--target", t)
	}
	if w.App, err = startProcess(m.logDir(), w.Namespace+"-"+w.Pod, demo, env, args...); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+w.Admin+"/ready", 2*time.Minute, w.App.Exited()); err != nil {
		return fmt.Errorf("its calls never succeeded: %w\n%s", err, w.App.Logs(4000))
	}
	return w.setReady(ctx, true)
}

// setReady writes the pod's status (Running on HostIP, Ready or not) as
// the kubelet does, and its EndpointSlices as the EndpointSlice
// controller does for a pod with an IP: listed, ready or not.
func (w *Workload) setReady(ctx context.Context, ready bool) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	w.pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: w.m.HostIP, PodIPs: []corev1.PodIP{{IP: w.m.HostIP}}, HostIP: w.m.HostIP,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}, {Type: corev1.ContainersReady, Status: cond}},
	}
	updated, err := w.m.clientset.CoreV1().Pods(w.Namespace).UpdateStatus(ctx, w.pod, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	w.pod = updated
	if w.Port == 0 {
		return nil
	}
	return w.Publish(ctx, ready)
}

// serviceOf is the Service a server names in its answers: the most
// specific of its Services (the split backend, checkout-v1, rather than
// the root, checkout) — the longest name, which holds for weft's samples.
func serviceOf(s Spec) string {
	best := s.Services[0]
	for _, svc := range s.Services[1:] {
		if len(svc) > len(best) {
			best = svc
		}
	}
	return best
}

// Publish writes the server's EndpointSlices (one per Service, named
// <service>-<pod>), as the EndpointSlice controller does for a pod with an
// IP, ready or not.
func (w *Workload) Publish(ctx context.Context, ready bool) error {
	for _, svc := range w.Services {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-" + w.Pod, Namespace: w.Namespace, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(w.Port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{w.m.HostIP},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: w.Namespace, Name: w.Pod},
			}},
		}
		if err := w.m.applySlice(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// Unpublish deletes the server's EndpointSlices (a pod going away is
// first removed from its Services' endpoints).
func (w *Workload) Unpublish(ctx context.Context) error {
	var errs []error
	for _, svc := range w.Services {
		err := w.m.clientset.DiscoveryV1().EndpointSlices(w.Namespace).Delete(ctx, svc+"-"+w.Pod, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stop removes the workload as a pod deletion would: endpoints first, then
// the processes, then the Pod object.
func (w *Workload) Stop(ctx context.Context) error {
	errs := []error{w.Unpublish(ctx), w.stopProcesses()}
	err := w.m.clientset.CoreV1().Pods(w.Namespace).Delete(ctx, w.Pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	w.m.mu.Lock()
	if w.m.workloads[w.key()] == w {
		delete(w.m.workloads, w.key())
	}
	w.m.mu.Unlock()
	return errors.Join(errs...)
}

func (w *Workload) stopProcesses() error {
	var errs []error
	for _, p := range []*Process{w.App, w.Agent} {
		if p != nil {
			errs = append(errs, p.Stop())
		}
	}
	return errors.Join(errs...)
}

// SetFailPercent makes the server fail this share of its calls.
func (w *Workload) SetFailPercent(percent int) error {
	if w.Port == 0 {
		return fmt.Errorf("%s is a client", w.key())
	}
	resp, err := http.Post(fmt.Sprintf("http://%s/fail?percent=%d", w.Admin, percent), "text/plain", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s /fail: %d %s", w.key(), resp.StatusCode, b)
	}
	return nil
}

// MetricsURL is where the application exports its statistics.
func (w *Workload) MetricsURL() string { return "http://" + w.Admin + "/metrics" }

// Workloads are the running workloads, by namespace/pod.
func (m *Mesh) Workloads() map[string]*Workload {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*Workload, len(m.workloads))
	for k, w := range m.workloads {
		out[k] = w
	}
	return out
}

// rootCA waits for weft to publish weft-root-ca in ns (it does so in
// meshed namespaces) and returns its root-cert.pem.
func (m *Mesh) rootCA(ctx context.Context, ns string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		cm, err := m.clientset.CoreV1().ConfigMaps(ns).Get(ctx, dataplane.RootCAConfigMap, metav1.GetOptions{})
		if err == nil && cm.Data[dataplane.RootCertFile] != "" {
			return []byte(cm.Data[dataplane.RootCertFile]), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("weft never published %s in namespace %s (is it labelled %s=%s?): %v", dataplane.RootCAConfigMap, ns, dataplane.LabelInject, dataplane.InjectEnabled, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// projectRootCA keeps every agent's root file equal to its namespace's
// weft-root-ca, replacing it atomically when a root rotation changes it,
// as the kubelet refreshes a projected ConfigMap.
func (m *Mesh) projectRootCA() {
	defer close(m.rootDone)
	for {
		select {
		case <-m.rootCtx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		byNS := map[string][]string{}
		for _, w := range m.Workloads() {
			byNS[w.Namespace] = append(byNS[w.Namespace], filepath.Join(w.Dir, "credentials", "root-cert.pem"))
		}
		for ns, files := range byNS {
			cm, err := m.clientset.CoreV1().ConfigMaps(ns).Get(m.rootCtx, dataplane.RootCAConfigMap, metav1.GetOptions{})
			if err != nil {
				continue
			}
			data := []byte(cm.Data[dataplane.RootCertFile])
			for _, f := range files {
				if cur, err := os.ReadFile(f); err == nil && !bytes.Equal(cur, data) {
					_ = os.WriteFile(f+".tmp", data, 0o600)
					_ = os.Rename(f+".tmp", f)
				}
			}
		}
	}
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
