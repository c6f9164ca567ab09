package store

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
)

// lastApplied is kubectl's copy of the whole applied object: often the
// largest part of a cached object, and never read by weft.
const lastApplied = corev1.LastAppliedConfigAnnotation

// AddToScheme adds every kind the store watches to s: the built-in kinds,
// weft's own and Gateway API's.
func AddToScheme(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme, gatewayv1.Install, gatewayv1beta1.Install} {
		if err := add(s); err != nil {
			return err
		}
	}
	return nil
}

// CacheOptions returns o with the transforms that keep the informer cache
// small; pass the result as manager.Options.Cache. Every object loses its
// managedFields and its kubectl last-applied annotation, and Pods keep only
// what weft reads (see TransformPod).
//
// Objects in this cache are therefore partial: never Update an object read
// from it (a status-subresource update is fine: the API server takes only
// the status from it).
func CacheOptions(o cache.Options) cache.Options {
	o.DefaultTransform = chain(o.DefaultTransform, TransformStripMetadata)
	if o.ByObject == nil {
		o.ByObject = map[client.Object]cache.ByObject{}
	}
	// A ByObject transform replaces the default one, so TransformPod strips
	// the metadata itself.
	o.ByObject[&corev1.Pod{}] = cache.ByObject{Transform: TransformPod}
	return o
}

func chain(first, second toolscache.TransformFunc) toolscache.TransformFunc {
	if first == nil {
		return second
	}
	return func(obj any) (any, error) {
		obj, err := first(obj)
		if err != nil {
			return nil, err
		}
		return second(obj)
	}
}

// TransformStripMetadata drops managedFields and the last-applied
// annotation, in place (the informer hands over a freshly decoded object).
func TransformStripMetadata(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[lastApplied]; ok {
				delete(a, lastApplied)
				if len(a) == 0 {
					m.SetAnnotations(nil)
				}
			}
		}
	}
	return obj, nil
}

// TransformPod keeps only what the translator and the xDS layer read from a
// Pod: name, namespace, uid, labels, annotations, spec.serviceAccountName
// and spec.nodeName, weft's own containers (weftContainers: the sidecar,
// the agent, and weft-init with its arguments, which say what it leaves
// uncaptured), and status.podIP(s). A pod with five containers shrinks
// from ~10 KiB to a few hundred bytes, and status churn (conditions,
// container states) no longer reaches the store. Readiness is read from
// EndpointSlices, which already carry it per address.
//
// TestTransformPodKeepsWhatTheTranslatorReads translates the simulator's
// mesh from whole and from trimmed pods and wants the same model.
func TransformPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return TransformStripMetadata(obj)
	}
	// Strip first: the maps below may be shared with other pods.
	if _, err := TransformStripMetadata(p); err != nil {
		return nil, err
	}
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              p.Name,
			Namespace:         p.Namespace,
			UID:               p.UID,
			ResourceVersion:   p.ResourceVersion,
			Generation:        p.Generation,
			CreationTimestamp: p.CreationTimestamp,
			DeletionTimestamp: p.DeletionTimestamp,
			Labels:            internMap(p.Labels),
			Annotations:       internMap(p.Annotations),
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.Spec.ServiceAccountName,
			NodeName:           p.Spec.NodeName, // where it runs: its zone (locality.go)
			Containers:         weftContainers(p.Spec.Containers),
			InitContainers:     weftContainers(p.Spec.InitContainers),
		},
		Status: corev1.PodStatus{PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	return out, nil
}

// weftContainers returns, of cs, the containers weft reads: its sidecar
// and agent by name, and weft-init with its arguments (the translator reads
// --exclude-inbound-ports: a port left uncaptured is not meshed, issue
// 12l). Nothing else of a container is kept, and other containers are
// dropped.
//
// Every pod of a mesh has one of a few such lists, and a corev1.Container
// is 408 bytes even with only its name set (two per meshed pod: 18 MiB of
// the bench's 20,000 pods), so the lists are interned: cached pods share
// them. Nothing modifies a cached object (see CacheOptions), and each list
// has its length as capacity, so an append copies it. The key names the
// containers and weft-init's arguments, each after its length, so no two
// different lists share a key whatever their arguments hold (one pod's
// author must not choose what another pod is cached with).
func weftContainers(cs []corev1.Container) []corev1.Container {
	var key strings.Builder
	for _, c := range cs {
		switch c.Name {
		case dataplane.SidecarContainerName, dataplane.AgentContainerName:
			key.WriteString(c.Name)
		case dataplane.InitContainerName:
			key.WriteString(c.Name)
			for _, a := range c.Args {
				key.WriteByte(0)
				key.WriteString(strconv.Itoa(len(a)))
				key.WriteByte(':')
				key.WriteString(a)
			}
		default:
			continue
		}
		key.WriteByte('\n')
	}
	if key.Len() == 0 {
		return nil
	}
	return containerLists.get(key.String(), func() []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			switch c.Name {
			case dataplane.SidecarContainerName, dataplane.AgentContainerName:
				out = append(out, corev1.Container{Name: c.Name})
			case dataplane.InitContainerName:
				out = append(out, corev1.Container{Name: c.Name, Args: slices.Clone(c.Args)})
			}
		}
		return slices.Clip(out)
	})
}

// maxInterned bounds each interning table. A table never learns that the
// pods holding an entry are gone, so when it is full it starts over: the
// pods cached before keep sharing what they share, and the ones after
// share anew. A cluster's live pods have a few hundred distinct label sets
// (one per ReplicaSet and StatefulSet revision) and a handful of container
// lists. What a table adds to the pods' own memory is its keys and the
// values of pods already gone: with maxInternedBytes, at most ~16 MiB for
// maps even when every pod is made to differ.
const maxInterned = 4096

// maxInternedBytes: a label or annotation map with more content than this
// is kept as it is, not interned (large annotations are usually a pod's
// own, and their key would double them).
const maxInternedBytes = 2048

// internTable shares equal values between cached pods, by a key that
// says everything about the value. Safe for concurrent use.
type internTable[V any] struct {
	mu sync.Mutex
	m  map[string]V
}

// get returns the value interned under key, making it with make when there
// is none.
func (t *internTable[V]) get(key string, make func() V) V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[key]; ok {
		return v
	}
	if t.m == nil || len(t.m) >= maxInterned {
		t.m = map[string]V{}
	}
	v := make()
	t.m[key] = v
	return v
}

var (
	containerLists internTable[[]corev1.Container]
	stringMaps     internTable[map[string]string]
)

// internMap returns a map equal to m that pods with the same labels (or
// annotations) share: every pod of a ReplicaSet has the same ones, and a
// small Go map costs ~300 bytes before its strings (6 MiB of the bench's
// 20,000 pods). The shared map must never be written; nothing writes a
// cached object (CacheOptions).
func internMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		keys = append(keys, k)
		n += len(k) + len(v) + 2
	}
	if n > maxInternedBytes {
		return m
	}
	slices.Sort(keys)
	var key strings.Builder
	key.Grow(n)
	for _, k := range keys {
		// Label and annotation keys cannot hold a NUL; values could, so
		// each is preceded by its length.
		key.WriteString(k)
		key.WriteByte(0)
		key.WriteString(strconv.Itoa(len(m[k])))
		key.WriteByte(':')
		key.WriteString(m[k])
	}
	return stringMaps.get(key.String(), func() map[string]string { return m })
}

// isFullPod reports a Pod that did not go through TransformPod: the cache
// was not configured with CacheOptions.
func isFullPod(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Image != "" {
			return true
		}
	}
	return len(p.ManagedFields) > 0
}

// significant returns a shallow copy of obj without what never changes a
// translation: the resourceVersion, and the status of every kind but Pod
// (the store's own status writes, and other controllers' writes to
// HTTPRoute and GRPCRoute status, must not trigger a translation). Two
// objects whose significant parts are equal translate the same.
func significant(obj client.Object) client.Object {
	switch o := obj.(type) {
	case *corev1.Pod:
		c := *o
		c.ResourceVersion = ""
		return &c
	case *corev1.Service:
		c := *o
		c.ResourceVersion, c.Status = "", corev1.ServiceStatus{}
		return &c
	case *corev1.Namespace:
		c := *o
		c.ResourceVersion, c.Status = "", corev1.NamespaceStatus{}
		return &c
	case *discoveryv1.EndpointSlice:
		c := *o
		c.ResourceVersion = ""
		return &c
	case *v1alpha1.TrafficSplit:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.Status{}
		return &c
	case *v1alpha1.RetryPolicy:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.Status{}
		return &c
	case *v1alpha1.AuthPolicy:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.Status{}
		return &c
	case *v1alpha1.BackendTrafficPolicy:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.Status{}
		return &c
	case *v1alpha1.RateLimitPolicy:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.Status{}
		return &c
	case *v1alpha1.MeshConfig:
		c := *o
		c.ResourceVersion, c.Status = "", v1alpha1.MeshConfigStatus{}
		return &c
	case *gatewayv1.HTTPRoute:
		c := *o
		c.ResourceVersion, c.Status = "", gatewayv1.HTTPRouteStatus{}
		return &c
	case *gatewayv1.GRPCRoute:
		c := *o
		c.ResourceVersion, c.Status = "", gatewayv1.GRPCRouteStatus{}
		return &c
	case *gatewayv1beta1.ReferenceGrant:
		c := *o
		c.ResourceVersion = ""
		return &c
	}
	return obj
}

// changed says whether an update from old to new can change a translation.
func changed(old, new client.Object) bool {
	if old == nil || new == nil {
		return true
	}
	return !equality.Semantic.DeepEqual(significant(old), significant(new))
}

// MustAddToScheme is AddToScheme that panics, for package-level schemes.
func MustAddToScheme(s *runtime.Scheme) { utilruntime.Must(AddToScheme(s)) }
