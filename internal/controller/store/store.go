// Package store is weft's Kubernetes watch layer: it watches what the
// translator reads through controller-runtime's informers, keeps its own
// index of the objects, and hands out immutable, sorted translator.Inputs
// snapshots in batches, with a summary of what changed.
//
// Batching follows Debouncer: the first change after a quiet period is
// delivered at once, bursts are coalesced, and a continuous stream is
// delivered at least every maxDelay. The delays come from MeshConfig
// spec.push and change live.
//
// See docs/design/040-watch-store-and-batching.md.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// MeshConfigName is the name of the singleton MeshConfig; others are
// ignored (the API server rejects them anyway).
const MeshConfigName = "weft"

// Batch is one delivery of the store: the state of the cluster after a
// batch of changes.
type Batch struct {
	// Inputs is the snapshot for the translator. It and everything it
	// points to are shared with later snapshots and the informer cache:
	// never modify them (slices have no spare capacity, so an append
	// copies).
	Inputs *translator.Inputs
	// FirstEvent is when the store saw the batch's first change (for the
	// initial batch: when the caches synced), to measure event-to-push
	// latency.
	FirstEvent time.Time
	// Events is how many significant events the batch coalesced.
	Events int
	// Changes says what changed.
	Changes Changes

	index *endpointIndex
}

// EndpointSlices returns the slices of a Service in this snapshot, for
// translator.UpdateEndpoints. The index is built on first use.
func (b *Batch) EndpointSlices(key ir.ServiceKey) []*discoveryv1.EndpointSlice {
	return b.index.get(b.Inputs).slices[key]
}

// Pod finds a pod of this snapshot: a translator.PodLookup.
func (b *Batch) Pod(namespace, name string) *corev1.Pod {
	pods := b.Inputs.Pods
	i := sort.Search(len(pods), func(i int) bool {
		p := pods[i]
		return p.Namespace > namespace || p.Namespace == namespace && p.Name >= name
	})
	if i < len(pods) && pods[i].Namespace == namespace && pods[i].Name == name {
		return pods[i]
	}
	return nil
}

// endpointIndex maps Services to their EndpointSlices. Batches whose
// EndpointSlices did not change share one.
type endpointIndex struct {
	once   sync.Once
	slices map[ir.ServiceKey][]*discoveryv1.EndpointSlice
}

func (x *endpointIndex) get(in *translator.Inputs) *endpointIndex {
	x.once.Do(func() {
		x.slices = map[ir.ServiceKey][]*discoveryv1.EndpointSlice{}
		for _, s := range in.EndpointSlices {
			if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
				k := ir.ServiceKey{Namespace: s.Namespace, Name: name}
				x.slices[k] = append(x.slices[k], s)
			}
		}
	})
	return x
}

// Store watches the cluster and batches changes. Create it with New before
// the manager starts, then call Run.
type Store struct {
	log   logr.Logger
	clock clock.WithTicker

	// synced are the event handlers' registrations: Run waits until each
	// has seen its informer's initial list.
	synced  []toolscache.ResourceEventHandlerRegistration
	running atomic.Bool
	kick    chan struct{}

	mu sync.Mutex // guards everything below
	// One table per kind, fed by the informers' event handlers.
	namespaces    table[*corev1.Namespace]
	services      table[*corev1.Service]
	slices        table[*discoveryv1.EndpointSlice]
	pods          table[*corev1.Pod]
	trafficSplits table[*v1alpha1.TrafficSplit]
	httpRoutes    table[*gatewayv1.HTTPRoute]
	grpcRoutes    table[*gatewayv1.GRPCRoute]
	retryPolicies table[*v1alpha1.RetryPolicy]
	authPolicies  table[*v1alpha1.AuthPolicy]
	backendPols   table[*v1alpha1.BackendTrafficPolicy]
	rateLimitPols table[*v1alpha1.RateLimitPolicy]
	meshConfigs   table[*v1alpha1.MeshConfig]
	grants        table[*gatewayv1beta1.ReferenceGrant]
	// nodes: each Node's topology labels (locality.go).
	nodes map[string]nodeLocality

	deb     *Debouncer
	changes changeSet
	// index is shared by batches until EndpointSlices change.
	index      *endpointIndex
	warnedPods bool
	// watchRoutes and watchGRPCRoutes: Gateway API's HTTPRoute and
	// GRPCRoute CRDs were installed when the store started; watchGrants:
	// its ReferenceGrant CRD was.
	watchRoutes, watchGRPCRoutes, watchGrants bool
	// insignificant counts dropped updates per kind (also exported as a
	// metric), so tests can tell that an update was seen and dropped.
	insignificant map[Kind]int
}

// New registers the store's watches on the manager's cache. Call it before
// mgr.Start. The manager's scheme must know the watched kinds (AddToScheme)
// and its cache should be configured with CacheOptions, or Pods are cached
// whole (the store logs an error if so). If the cluster has no Gateway API
// CRDs, HTTPRoutes and GRPCRoutes are not watched (and the store says so
// in the log), each on its own: a cluster may have one CRD and not the
// other.
func New(mgr manager.Manager, log logr.Logger) (*Store, error) {
	return newStore(mgr.GetCache(), clock.RealClock{}, log)
}

func newStore(c cache.Cache, clk clock.WithTicker, log logr.Logger) (*Store, error) {
	s := &Store{
		log:   log,
		clock: clk,
		kick:  make(chan struct{}, 1),
		deb:   NewDebouncer(clk, DefaultQuietPeriod, DefaultMaxDelay),
		index: &endpointIndex{},

		insignificant: map[Kind]int{},
	}
	errs := []error{
		watch(s, c, KindNamespace, &corev1.Namespace{}, &s.namespaces),
		watch(s, c, KindService, &corev1.Service{}, &s.services),
		watch(s, c, KindEndpointSlice, &discoveryv1.EndpointSlice{}, &s.slices),
		watch(s, c, KindPod, &corev1.Pod{}, &s.pods),
		watch(s, c, KindTrafficSplit, &v1alpha1.TrafficSplit{}, &s.trafficSplits),
		watch(s, c, KindRetryPolicy, &v1alpha1.RetryPolicy{}, &s.retryPolicies),
		watch(s, c, KindAuthPolicy, &v1alpha1.AuthPolicy{}, &s.authPolicies),
		watch(s, c, KindBackendTrafficPolicy, &v1alpha1.BackendTrafficPolicy{}, &s.backendPols),
		watch(s, c, KindRateLimitPolicy, &v1alpha1.RateLimitPolicy{}, &s.rateLimitPols),
		watch(s, c, KindMeshConfig, &v1alpha1.MeshConfig{}, &s.meshConfigs),
	}
	errs = append(errs, watchServiceAccountDeletions(s, c), watchNodes(s, c))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("watching weft's inputs (are weft's CRDs installed?): %w", err)
	}
	// Gateway API is optional: many clusters do not have its CRDs.
	switch err := watch(s, c, KindHTTPRoute, &gatewayv1.HTTPRoute{}, &s.httpRoutes); {
	case err == nil:
		s.watchRoutes = true
	case meta.IsNoMatchError(err):
		log.Info("Gateway API HTTPRoute CRD not installed: HTTPRoutes are not watched; restart weft-controller after installing it")
	default:
		return nil, fmt.Errorf("watching HTTPRoutes: %w", err)
	}
	switch err := watch(s, c, KindGRPCRoute, &gatewayv1.GRPCRoute{}, &s.grpcRoutes); {
	case err == nil:
		s.watchGRPCRoutes = true
	case meta.IsNoMatchError(err):
		log.Info("Gateway API GRPCRoute CRD not installed: GRPCRoutes are not watched; restart weft-controller after installing it")
	default:
		return nil, fmt.Errorf("watching GRPCRoutes: %w", err)
	}
	// ReferenceGrant (v1beta1, which every Gateway API release since
	// v0.6 serves) permits HTTPRoutes' and GRPCRoutes' backends in other namespaces.
	switch err := watch(s, c, KindReferenceGrant, &gatewayv1beta1.ReferenceGrant{}, &s.grants); {
	case err == nil:
		s.watchGrants = true
	case meta.IsNoMatchError(err):
		log.Info("Gateway API ReferenceGrant CRD not installed: ReferenceGrants are not watched, and HTTPRoutes' and GRPCRoutes' backends in other namespaces are refused; restart weft-controller after installing it")
	default:
		return nil, fmt.Errorf("watching ReferenceGrants: %w", err)
	}
	return s, nil
}

// PushDelays returns the quiet period and maximum delay in effect (from
// MeshConfig spec.push, or the defaults).
func (s *Store) PushDelays() (quiet, maxDelay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deb.Delays()
}

// Run waits for the caches to sync, delivers the initial batch
// (Changes.Full), and then a batch per Debouncer flush, until ctx ends. fn
// runs on Run's goroutine: events that arrive while it runs are coalesced
// into the next batch, which is due as soon as fn returns if its deadline
// has passed. Run returns nil when ctx ends; it may be called once.
func (s *Store) Run(ctx context.Context, fn func(Batch)) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("store: Run called twice")
	}
	if !s.waitForSync(ctx) {
		return nil
	}
	s.mu.Lock()
	b := s.flushLocked(true)
	s.mu.Unlock()
	s.log.Info("caches synced: initial snapshot", "services", len(b.Inputs.Services), "endpointSlices", len(b.Inputs.EndpointSlices), "pods", len(b.Inputs.Pods))
	fn(b)

	for {
		s.mu.Lock()
		deadline, pending := s.deb.Deadline()
		now := s.clock.Now()
		if pending && !now.Before(deadline) {
			b := s.flushLocked(false)
			s.mu.Unlock()
			fn(b)
			continue
		}
		s.mu.Unlock()

		var timer clock.Timer
		var fire <-chan time.Time
		if pending {
			timer = s.clock.NewTimer(deadline.Sub(now))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-s.kick:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (s *Store) waitForSync(ctx context.Context) bool {
	tick := s.clock.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for _, r := range s.synced {
			done = done && r.HasSynced()
		}
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C():
		}
	}
}

// flushLocked ends the pending batch and takes a snapshot.
func (s *Store) flushLocked(full bool) Batch {
	first, n := s.deb.Flush()
	ch := s.changes.summary(s.slices.objs)
	if full {
		first = s.clock.Now()
		ch = Changes{Full: true, Kinds: kindEnd - 1}
		if !s.watchRoutes {
			ch.Kinds &^= KindHTTPRoute
		}
		if !s.watchGRPCRoutes {
			ch.Kinds &^= KindGRPCRoute
		}
		if !s.watchGrants {
			ch.Kinds &^= KindReferenceGrant
		}
	}
	if ch.Kinds&KindEndpointSlice != 0 || full {
		s.index = &endpointIndex{}
	}
	s.changes = changeSet{}
	pendingEvents.Set(0)
	if !full {
		batchEvents.Observe(float64(n))
		batchHoldoff.Observe(s.clock.Since(first).Seconds())
	}
	in := &translator.Inputs{
		Namespaces:             s.namespaces.list(),
		Services:               s.services.list(),
		EndpointSlices:         s.slices.list(),
		Pods:                   s.pods.list(),
		TrafficSplits:          s.trafficSplits.list(),
		HTTPRoutes:             s.httpRoutes.list(),
		GRPCRoutes:             s.grpcRoutes.list(),
		RetryPolicies:          s.retryPolicies.list(),
		AuthPolicies:           s.authPolicies.list(),
		BackendTrafficPolicies: s.backendPols.list(),
		RateLimitPolicies:      s.rateLimitPols.list(),
		MeshConfig:             s.meshConfigs.objs[types.NamespacedName{Name: MeshConfigName}],
		ReferenceGrants:        s.grants.list(),
	}
	return Batch{Inputs: in, FirstEvent: first, Events: n, Changes: ch, index: s.index}
}

// watch registers event handlers for one kind that keep t up to date and
// record significant changes.
func watch[T client.Object](s *Store, c cache.Cache, k Kind, obj T, t *table[T]) error {
	inf, err := c.GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	put := func(o any) {
		if n, ok := o.(T); ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			old, had, significant := t.put(n)
			switch {
			case !had:
				s.record(k, nil, n, true)
			default:
				s.record(k, old, n, significant)
			}
		}
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    put,
		UpdateFunc: func(_, o any) { put(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if n, ok := o.(T); ok {
				s.mu.Lock()
				defer s.mu.Unlock()
				if old, had := t.remove(n); had {
					s.record(k, old, nil, true)
				}
			}
		},
	})
	if err != nil {
		return err
	}
	s.synced = append(s.synced, reg)
	return nil
}

// watchServiceAccountDeletions records deleted ServiceAccounts
// (Changes.ServiceAccountsGone), so that their streams end at once. The
// informer is metadata-only (the cache keeps names, not secrets or
// tokens), and adds and updates are ignored: ServiceAccounts are no
// translator input.
func watchServiceAccountDeletions(s *Store, c cache.Cache) error {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	inf, err := c.GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			m, ok := o.(metav1.Object)
			if !ok {
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.changes.serviceAccountGone(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
			events.WithLabelValues("ServiceAccount", "true").Inc()
			s.deb.Event()
			pendingEvents.Set(float64(s.deb.Pending()))
			select {
			case s.kick <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	s.synced = append(s.synced, reg)
	return nil
}

// record notes a change of kind k from old to new (either may be nil, not
// both) and tells the debouncer, unless the change is insignificant. The
// caller holds s.mu, so the tables and the change set stay consistent for
// a concurrent flush.
func (s *Store) record(k Kind, old, new client.Object, significant bool) {
	name := kindNames[k]
	if !significant {
		events.WithLabelValues(name, "false").Inc()
		s.insignificant[k]++
		return
	}
	obj := new
	if obj == nil {
		obj = old
	}
	switch k {
	case KindEndpointSlice:
		o, _ := old.(*discoveryv1.EndpointSlice)
		n, _ := new.(*discoveryv1.EndpointSlice)
		s.changes.slice(o, n)
	case KindPod:
		if n, ok := new.(*corev1.Pod); ok && !s.warnedPods && isFullPod(n) {
			s.warnedPods = true
			s.log.Error(nil, "Pods are cached whole: the manager's cache was not configured with store.CacheOptions, so memory grows with pod specs")
		}
		s.changes.pod(client.ObjectKeyFromObject(obj))
	case KindMeshConfig:
		if obj.GetName() != MeshConfigName {
			events.WithLabelValues(name, "false").Inc()
			return
		}
		s.setPush(new)
		s.changes.add(k)
	default:
		s.changes.add(k)
	}
	events.WithLabelValues(name, "true").Inc()
	s.deb.Event()
	pendingEvents.Set(float64(s.deb.Pending()))
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setPush applies MeshConfig spec.push; nil (deleted) restores the
// defaults. The API server validates the durations; an unparsable one
// keeps that default rather than stopping pushes.
func (s *Store) setPush(obj client.Object) {
	quiet, maxDelay := DefaultQuietPeriod, DefaultMaxDelay
	if mc, ok := obj.(*v1alpha1.MeshConfig); ok && mc != nil {
		quiet = parseDuration(s.log, "spec.push.quietPeriod", mc.Spec.Push.QuietPeriod, quiet)
		maxDelay = parseDuration(s.log, "spec.push.maxDelay", mc.Spec.Push.MaxDelay, maxDelay)
	}
	if q, m := s.deb.Delays(); q != quiet || m != maxDelay {
		s.log.Info("push batching changed", "quietPeriod", quiet, "maxDelay", maxDelay)
	}
	s.deb.SetDelays(quiet, maxDelay)
}

func parseDuration(log logr.Logger, field string, v v1alpha1.Duration, def time.Duration) time.Duration {
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(string(v))
	if err != nil || d < 0 {
		log.Error(err, "MeshConfig: unusable duration, using the default", "field", field, "value", v, "default", def)
		return def
	}
	return d
}

// table holds the objects of one kind, with a sorted list that is rebuilt
// only after a significant change, so unchanged kinds cost nothing per
// batch. The store's lock guards it.
type table[T client.Object] struct {
	objs   map[types.NamespacedName]T
	sorted []T
	dirty  bool
}

// put stores obj and returns the object it replaced, and whether the
// replacement is significant (see changed).
func (t *table[T]) put(obj T) (old T, had, significant bool) {
	key := client.ObjectKeyFromObject(obj)
	if t.objs == nil {
		t.objs = map[types.NamespacedName]T{}
	}
	old, had = t.objs[key]
	t.objs[key] = obj
	// An insignificant update (status, resourceVersion) replaces the
	// object without invalidating the sorted list, which keeps the old
	// pointer until the next significant change: the two translate the
	// same.
	significant = !had || changed(old, obj)
	if significant {
		t.dirty = true
	}
	return old, had, significant
}

// remove deletes obj's key and returns what was stored.
func (t *table[T]) remove(obj T) (old T, had bool) {
	key := client.ObjectKeyFromObject(obj)
	if old, had = t.objs[key]; had {
		delete(t.objs, key)
		t.dirty = true
	}
	return old, had
}

// list returns the objects sorted by namespace, then name. The result is
// shared by every snapshot until the next significant change, and has no
// spare capacity so that an append never writes into it.
func (t *table[T]) list() []T {
	if !t.dirty {
		return t.sorted
	}
	t.dirty = false
	if len(t.objs) == 0 {
		t.sorted = nil
		return nil
	}
	out := make([]T, 0, len(t.objs))
	for _, o := range t.objs {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
	t.sorted = slices.Clip(out)
	return t.sorted
}
