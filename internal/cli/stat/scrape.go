package stat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
)

// Read is one read of one source.
type Read struct {
	// Name is NAMESPACE/POD or the URL.
	Name string
	Pod  *Pod
	// At is when the answer arrived.
	At     time.Time
	Scrape Scrape
	Err    error
}

// Scraper reads every source once. An error means there was nothing to
// read at all (no pod with a sidecar, say); a source that does not answer
// is a Read with Err.
type Scraper interface {
	Scrape(ctx context.Context) ([]Read, error)
}

// ReadTimeout bounds one source's answer: a sidecar answers its stats
// page in milliseconds, even with thousands of clusters.
const ReadTimeout = 10 * time.Second

// parallel bounds the reads in flight (through the API server, each is a
// proxied request it carries).
const parallel = 8

// URLs reads Prometheus text from each URL directly (what `make run`
// prints for its demo workloads, or a port-forwarded sidecar's
// http://127.0.0.1:15090/stats/prometheus).
type URLs struct {
	Client *http.Client
	URLs   []string
}

func (u URLs) Scrape(ctx context.Context) ([]Read, error) {
	if len(u.URLs) == 0 {
		return nil, errors.New("no URL to read")
	}
	c := u.Client
	if c == nil {
		c = http.DefaultClient
	}
	return readAll(ctx, len(u.URLs), func(ctx context.Context, i int) Read {
		r := Read{Name: u.URLs[i]}
		r.Scrape, r.Err = getURL(ctx, c, u.URLs[i])
		r.At = time.Now()
		return r
	}), nil
}

func getURL(ctx context.Context, c *http.Client, url string) (Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("nothing listens there (is the workload running? `make run` prints its metrics URLs): %w", err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s: %s", resp.Status, snippet(body))
	}
	return Parse(bytes.NewReader(body))
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// readAll runs read for 0…n-1, parallel at a time, in order.
func readAll(ctx context.Context, n int, read func(context.Context, int) Read) []Read {
	out := make([]Read, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = read(ctx, i)
		}()
	}
	wg.Wait()
	return out
}

// Sidecars reads every running pod with a weft sidecar in Namespace (""
// for every namespace) through the API server's pod proxy
// (/api/v1/namespaces/NS/pods/POD:PORT/proxy/stats/prometheus), on the
// sidecar's stats port. The pods are listed again on every Scrape, so a
// watch follows rollouts.
type Sidecars struct {
	// Client lists pods.
	Client client.Reader
	// REST reaches the core API group (kubernetes.Clientset
	// .CoreV1().RESTClient()).
	REST      rest.Interface
	Namespace string
}

func (s Sidecars) Scrape(ctx context.Context) ([]Read, error) {
	pods, err := SidecarPods(ctx, s.Client, s.Namespace)
	if err != nil {
		return nil, err
	}
	return readAll(ctx, len(pods), func(ctx context.Context, i int) Read {
		p := pods[i]
		r := Read{Name: p.Namespace + "/" + p.Name, Pod: &p.Pod}
		r.Scrape, r.Err = s.get(ctx, p)
		r.At = time.Now()
		return r
	}), nil
}

// SidecarPod is a pod to read, and where.
type SidecarPod struct {
	Pod
	// StatsPort is the sidecar's StatsPortName port.
	StatsPort int32
}

// StatsFilter keeps, of a sidecar's statistics, the four series weft stat
// reads, by their names before tag extraction
// (cluster.outbound|80||web.shop.svc.cluster.local.upstream_rq_2xx).
// Envoy's /stats/prometheus applies it with its `filter` parameter, and
// `usedonly` leaves out what never counted anything: a sidecar has a
// cluster for every Service it may call, and its whole page grows with
// the mesh. A cluster left out of one read had counted nothing, which is
// what Delta assumes of a cluster missing from the earlier read.
const StatsFilter = `^cluster\.(outbound|inbound)\|.*\.upstream_(rq_total|rq_[0-9]xx|rq_time|cx_active)$`

// StatsRequest is the request that reads a pod's sidecar through the API
// server's pod proxy: /api/v1/namespaces/NS/pods/POD:PORT/proxy/stats/prometheus
// (the stats listener routes the path; the query goes on to Envoy's admin).
func (s Sidecars) StatsRequest(p SidecarPod) *rest.Request {
	return s.REST.Get().Namespace(p.Namespace).Resource("pods").
		Name(p.Name+":"+strconv.Itoa(int(p.StatsPort))).SubResource("proxy").
		Suffix(dataplane.StatsPath).Param("usedonly", "").Param("filter", StatsFilter)
}

func (s Sidecars) get(ctx context.Context, p SidecarPod) (Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	defer cancel()
	body, err := s.StatsRequest(p).DoRaw(ctx)
	if err != nil {
		var st apierrors.APIStatus
		switch {
		case apierrors.IsForbidden(err):
			return nil, fmt.Errorf("you may not read pods/proxy in %s (kubectl auth can-i get pods --subresource=proxy -n %s): %w", p.Namespace, p.Namespace, err)
		case errors.As(err, &st):
			return nil, fmt.Errorf("the sidecar's stats port %d did not answer through the API server's pod proxy: %s (is weft-proxy running and configured? kubectl -n %s logs %s -c %s; weft proxy-status)",
				p.StatsPort, strings.TrimSpace(st.Status().Message), p.Namespace, p.Name, dataplane.SidecarContainerName)
		}
		return nil, err
	}
	return Parse(bytes.NewReader(body))
}

// ErrNoSidecars says a namespace has no running pod with a weft sidecar.
var ErrNoSidecars = errors.New("no running pod with a weft sidecar")

// SidecarPods lists the running pods with a weft sidecar (the injected
// container dataplane.SidecarContainerName, native or not) in namespace
// ("" for every one), sorted.
func SidecarPods(ctx context.Context, c client.Reader, namespace string) ([]SidecarPod, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		where := "in every namespace"
		if namespace != "" {
			where = "in namespace " + namespace
		}
		return nil, fmt.Errorf("listing pods %s: %w", where, err)
	}
	var out []SidecarPod
	injected, proxyless := 0, 0
	for i := range pods.Items {
		p := &pods.Items[i]
		port, ok := statsPort(p)
		if !ok {
			if isProxyless(p) && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				proxyless++
			}
			continue
		}
		injected++
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		out = append(out, SidecarPod{Pod: Pod{Namespace: p.Namespace, Name: p.Name, Deployment: deploymentOf(p)}, StatsPort: port})
	}
	if len(out) == 0 {
		switch {
		case injected > 0:
			return nil, fmt.Errorf("%w %s: %d injected, none running yet (kubectl get pods%s)", ErrNoSidecars, where(namespace), injected, nsFlag(namespace))
		case proxyless > 0:
			// Their gRPC library applies weft's configuration; it has no
			// Envoy statistics page for the pod proxy to read.
			return nil, fmt.Errorf("%w %s: its %d meshed pods are proxyless gRPC (%s), whose gRPC library serves no sidecar statistics to read through the pod proxy: give --prometheus URL (a Prometheus that scrapes your applications' metrics in Envoy's names, docs/metrics.md) or --metrics-url URL (such an endpoint itself, as 'make run' prints for its demo)",
				ErrNoSidecars, where(namespace), proxyless, dataplane.AnnotationProxyless)
		case namespace == "":
			return nil, fmt.Errorf("%w in any namespace: is injection enabled? kubectl label namespace NS %s=%s, then restart its workloads (weft check lists what runs without a sidecar)",
				ErrNoSidecars, dataplane.LabelInject, dataplane.InjectEnabled)
		default:
			return nil, fmt.Errorf("%w in namespace %s: is injection enabled? kubectl label namespace %s %s=%s, then restart its workloads (weft check lists what runs without a sidecar)",
				ErrNoSidecars, namespace, namespace, dataplane.LabelInject, dataplane.InjectEnabled)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func where(ns string) string {
	if ns == "" {
		return "in any namespace"
	}
	return "in namespace " + ns
}

func nsFlag(ns string) string {
	if ns == "" {
		return " -A"
	}
	return " -n " + ns
}

// isProxyless: a proxyless gRPC pod (weft.dev/proxyless) with weft's
// agent, which takes xDS without a sidecar.
func isProxyless(p *corev1.Pod) bool {
	if _, ok := p.Annotations[dataplane.AnnotationProxyless]; !ok {
		return false
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name == dataplane.AgentContainerName {
				return true
			}
		}
	}
	return false
}

// statsPort is the port of the pod's sidecar named StatsPortName
// (dataplane.StatsPort when the container names none); ok is false
// without a sidecar.
func statsPort(p *corev1.Pod) (int32, bool) {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name != dataplane.SidecarContainerName {
				continue
			}
			for _, port := range c.Ports {
				if port.Name == dataplane.StatsPortName {
					return port.ContainerPort, true
				}
			}
			return dataplane.StatsPort, true
		}
	}
	return 0, false
}

// deploymentOf is the Deployment that owns the pod through its
// ReplicaSet: the ReplicaSet is named <deployment>-<pod-template-hash>.
func deploymentOf(p *corev1.Pod) string {
	hash := p.Labels["pod-template-hash"]
	for _, o := range p.OwnerReferences {
		if o.Kind == "ReplicaSet" && o.Controller != nil && *o.Controller && hash != "" {
			if d, ok := strings.CutSuffix(o.Name, "-"+hash); ok {
				return d
			}
		}
	}
	return ""
}

// ReadSplits lists the TrafficSplits of every namespace; none when the
// CRD is not installed.
func ReadSplits(ctx context.Context, c client.Reader) ([]Split, error) {
	var l v1alpha1.TrafficSplitList
	if err := c.List(ctx, &l); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing TrafficSplits: %w", err)
	}
	return SplitsFrom(l.Items), nil
}
