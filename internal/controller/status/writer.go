// Package status writes the status of weft's policies: Accepted and
// ResolvedRefs from the translator, Programmed from the xDS layer.
//
// One goroutine writes (DESIGN rule 5), only on the leader (Writer is a
// manager.Runnable that needs leader election). It works from a
// rate-limited queue of policy keys, so bursts of changes to one policy
// coalesce into one write; it writes nothing when the status on the object
// already says what it should; it never writes conditions about a
// generation older than the object's current one.
//
// See docs/design/041-policy-status-writer.md.
package status

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// KindMeshConfig is MeshConfig's PolicyKey kind, should the translator
// report its status.
const KindMeshConfig = "MeshConfig"

// Defaults of Options.
const (
	DefaultQPS   = 20
	DefaultBurst = 50
)

// Options adjust a Writer; the zero value is the production setting.
type Options struct {
	// QPS and Burst bound status writes (API calls that change something;
	// skipped writes are free).
	QPS   float32
	Burst int
	// Clock stamps lastTransitionTime; the real clock if nil.
	Clock clock.PassiveClock
	// Peers, when set, are the other replicas' reports: Programmed then
	// aggregates them with this replica's own ProgrammedSource (Aggregate).
	// Nil means this replica's proxies are all there is.
	Peers PeerSource
}

// Writer is the policy status writer. Create it with New, add it to the
// manager (mgr.Add), and feed it with SetDesired and ProgrammedChanged.
type Writer struct {
	log    logr.Logger
	clock  clock.PassiveClock
	client client.Client // cached reads, status writes
	live   client.Reader // the API server, after a conflict
	source ProgrammedSource
	peers  PeerSource
	limit  flowcontrol.RateLimiter

	// queue holds the keys to look at. A leader term's end shuts it down;
	// the next term's Start makes a new one.
	qmu   sync.Mutex
	queue workqueue.TypedRateLimitingInterface[translator.PolicyKey]

	mu      sync.Mutex
	desired map[translator.PolicyKey][]metav1.Condition

	// written remembers the object returned by our last write of each key,
	// so that a cache that has not caught up with our own write does not
	// cost a conflict. Only the worker goroutine touches it.
	written map[translator.PolicyKey]writtenObject

	stats Stats
}

type writtenObject struct {
	before string // resourceVersion the write replaced
	obj    client.Object
}

// Stats counts the writer's work since it was created (also exported as
// Prometheus metrics).
type Stats struct {
	Writes, Skipped, Stale, Conflicts, Errors atomic.Int64
}

// New returns a writer that reads policies through mgr's client (its
// cache) and, after a conflict, from the API server. source may be nil
// until the xDS layer exists: every accepted policy is then
// Programmed=Unknown, Pending.
func New(mgr manager.Manager, source ProgrammedSource, log logr.Logger, o Options) *Writer {
	return newWriter(mgr.GetClient(), mgr.GetAPIReader(), source, log, o)
}

// newQueue is the writer's queue of policy keys. Failures back off per
// key; successes are not delayed (the token bucket paces writes, and a
// key waiting in the queue absorbs every change made to it meanwhile).
func newQueue() workqueue.TypedRateLimitingInterface[translator.PolicyKey] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[translator.PolicyKey](100*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[translator.PolicyKey]{Name: "weft_status"})
}

// q is the current term's queue (Start replaces a shut-down one).
func (w *Writer) q() workqueue.TypedRateLimitingInterface[translator.PolicyKey] {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return w.queue
}

func newWriter(c client.Client, live client.Reader, source ProgrammedSource, log logr.Logger, o Options) *Writer {
	if o.QPS == 0 {
		o.QPS = DefaultQPS
	}
	if o.Burst == 0 {
		o.Burst = DefaultBurst
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &Writer{
		log:     log,
		clock:   o.Clock,
		client:  c,
		live:    live,
		source:  source,
		peers:   o.Peers,
		limit:   flowcontrol.NewTokenBucketRateLimiter(o.QPS, o.Burst),
		queue:   newQueue(),
		desired: map[translator.PolicyKey][]metav1.Condition{},
		written: map[translator.PolicyKey]writtenObject{},
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() *Stats { return &w.stats }

// NeedLeaderElection makes the writer run on the leader only.
func (w *Writer) NeedLeaderElection() bool { return true }

// SetDesired takes the policies' conditions from a translation
// (translator.Output.Status) and queues every policy whose conditions
// changed, appeared or disappeared. It never blocks on the API server;
// call it after each full translation, from any goroutine.
func (w *Writer) SetDesired(status map[translator.PolicyKey][]metav1.Condition) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, conds := range status {
		if old, ok := w.desired[k]; !ok || !equality.Semantic.DeepEqual(old, conds) {
			w.q().Add(k)
		}
	}
	for k := range w.desired {
		if _, ok := status[k]; !ok {
			w.q().Add(k) // deleted, or no longer the mesh's (HTTPRoute, GRPCRoute)
		}
	}
	w.desired = maps.Clone(status)
}

// ProgrammedChanged tells the writer that the distribution of these
// policies changed; it reads the new state from the ProgrammedSource when
// it gets to them. It never blocks; call it from any goroutine.
func (w *Writer) ProgrammedChanged(keys ...translator.PolicyKey) {
	q := w.q()
	for _, k := range keys {
		q.Add(k)
	}
}

// Resync queues every policy: what decides their Programmed condition may
// have changed for all of them at once (a replica joined or left). Only
// statuses that change are written.
func (w *Writer) Resync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.q()
	for k := range w.desired {
		q.Add(k)
	}
}

// Start runs the single writing goroutine until ctx ends. It may be
// called again after it returned (each leader term, docs/design/077).
func (w *Writer) Start(ctx context.Context) error {
	w.qmu.Lock()
	if w.queue.ShuttingDown() {
		// A new term: what the last one queued and wrote is another
		// leader's past; Resync below queues everything.
		w.queue = newQueue()
		w.written = map[translator.PolicyKey]writtenObject{}
	}
	q := w.queue
	w.qmu.Unlock()
	// Leadership may come long after the first translation: write what is
	// desired now. (Keys queued before stay queued; the queue dedups.)
	w.Resync()
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	w.log.Info("writing policy status")
	for w.processNext(ctx, q) {
	}
	return nil
}

func (w *Writer) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[translator.PolicyKey]) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	if err := w.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return false
		}
		w.stats.Errors.Add(1)
		writeErrors.WithLabelValues(key.Kind).Inc()
		w.log.Error(err, "writing status; will retry", "kind", key.Kind, "namespace", key.Namespace, "name", key.Name)
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}

// peersUnreadRetry is how soon a policy skipped because the other
// replicas' reports were not read yet is looked at again (reading them
// takes one list: a fraction of a second).
const peersUnreadRetry = time.Second

// maxConflicts is how many times one sync re-reads and retries after a
// conflict before backing off through the queue.
const maxConflicts = 3

func (w *Writer) sync(ctx context.Context, key translator.PolicyKey) error {
	w.mu.Lock()
	translated, ok := w.desired[key]
	w.mu.Unlock()
	obj := newObject(key.Kind)
	if obj == nil {
		return nil // a kind without status of ours
	}
	if !ok && key.Kind != translator.KindHTTPRoute && key.Kind != translator.KindGRPCRoute {
		return nil // deleted: nothing to write
	}
	nn := types.NamespacedName{Namespace: key.Namespace, Name: key.Name}
	if err := w.client.Get(ctx, nn, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	obj = w.fresher(key, obj)
	if w.peers != nil && !w.peers.Synced() {
		// A new leader that has not read the other replicas' reports:
		// leave the previous leader's conditions (issue 13, 077). The
		// PeerSource resyncs every policy once it has read them; the
		// retry covers a key that Resync does not list (a route leaving
		// the mesh).
		w.stats.Skipped.Add(1)
		skipped.WithLabelValues(key.Kind, "peers_unread").Inc()
		w.q().AddAfter(key, peersUnreadRetry)
		return nil
	}

	for attempt := 0; ; attempt++ {
		before := obj.GetResourceVersion()
		switch w.apply(key, obj, translated) {
		case unchanged:
			w.stats.Skipped.Add(1)
			skipped.WithLabelValues(key.Kind, "unchanged").Inc()
			return nil
		case stale:
			w.stats.Stale.Add(1)
			skipped.WithLabelValues(key.Kind, "stale_generation").Inc()
			return nil
		}
		if err := w.limit.Wait(ctx); err != nil {
			return err
		}
		err := w.client.Status().Update(ctx, obj)
		switch {
		case err == nil:
			w.stats.Writes.Add(1)
			writes.WithLabelValues(key.Kind).Inc()
			w.written[key] = writtenObject{before: before, obj: obj}
			return nil
		case apierrors.IsNotFound(err):
			delete(w.written, key)
			return nil
		case apierrors.IsConflict(err) && attempt < maxConflicts:
			w.stats.Conflicts.Add(1)
			conflicts.WithLabelValues(key.Kind).Inc()
			delete(w.written, key)
			obj = newObject(key.Kind)
			if err := w.live.Get(ctx, nn, obj); err != nil {
				return client.IgnoreNotFound(err)
			}
		default:
			return fmt.Errorf("updating the status of %s %s: %w", key.Kind, nn, err)
		}
	}
}

// fresher returns our own last write of the key instead of obj when obj is
// the version that write replaced: the cache has not caught up yet.
func (w *Writer) fresher(key translator.PolicyKey, obj client.Object) client.Object {
	wr, ok := w.written[key]
	if !ok {
		return obj
	}
	if obj.GetResourceVersion() == wr.before && obj.GetGeneration() == wr.obj.GetGeneration() {
		return wr.obj.DeepCopyObject().(client.Object)
	}
	delete(w.written, key)
	return obj
}

type outcome int

const (
	write outcome = iota
	unchanged
	stale
)

// apply sets obj's status to what is desired for key, and says whether
// to write it. translated is nil when the translator no longer reports the
// policy.
func (w *Writer) apply(key translator.PolicyKey, obj client.Object, translated []metav1.Condition) outcome {
	gen := generationOf(translated)
	if translated != nil && obj.GetGeneration() != gen {
		// The conditions describe another generation than the object's: a
		// newer spec is on its way through the translator (or the object
		// was re-created). Writing would claim the new spec was processed.
		return stale
	}
	var want []metav1.Condition
	if translated != nil {
		accepted := true
		for _, c := range translated {
			if c.Type == v1alpha1.ConditionAccepted && c.Status != metav1.ConditionTrue {
				accepted = false
			}
		}
		d, known := w.distribution(key, gen)
		now := metav1.NewTime(w.clock.Now()).Rfc3339Copy()
		want = desiredConditions(translated, ProgrammedCondition(gen, accepted, d, known), now)
	}

	var changed bool
	switch o := obj.(type) {
	case *gatewayv1.HTTPRoute:
		changed = mergeRouteParents(&o.Status.Parents, o.Spec.ParentRefs, want)
	case *gatewayv1.GRPCRoute:
		changed = mergeRouteParents(&o.Status.Parents, o.Spec.ParentRefs, want)
	default:
		st := policyStatus(obj)
		if st == nil || want == nil {
			return unchanged
		}
		changed = mergePolicyStatus(st, want, gen)
	}
	if !changed {
		return unchanged
	}
	return write
}

// distribution is how far generation gen of the policy got: this
// replica's proxies, plus every live peer's when there are peers.
func (w *Writer) distribution(key translator.PolicyKey, gen int64) (Distribution, bool) {
	var reports []Report
	if w.source != nil {
		d, known := w.source.Programmed(key)
		reports = append(reports, Report{Known: known, Distribution: d})
	}
	if w.peers != nil {
		reports = append(reports, w.peers.PeerReports(key)...)
	}
	return Aggregate(gen, reports)
}

func newObject(kind string) client.Object {
	switch kind {
	case translator.KindTrafficSplit:
		return &v1alpha1.TrafficSplit{}
	case translator.KindRetryPolicy:
		return &v1alpha1.RetryPolicy{}
	case translator.KindAuthPolicy:
		return &v1alpha1.AuthPolicy{}
	case translator.KindBackendTrafficPolicy:
		return &v1alpha1.BackendTrafficPolicy{}
	case translator.KindRateLimitPolicy:
		return &v1alpha1.RateLimitPolicy{}
	case translator.KindHTTPRoute:
		return &gatewayv1.HTTPRoute{}
	case translator.KindGRPCRoute:
		return &gatewayv1.GRPCRoute{}
	case KindMeshConfig:
		return &v1alpha1.MeshConfig{}
	}
	return nil
}

func policyStatus(obj client.Object) *v1alpha1.Status {
	switch o := obj.(type) {
	case *v1alpha1.TrafficSplit:
		return &o.Status
	case *v1alpha1.RetryPolicy:
		return &o.Status
	case *v1alpha1.AuthPolicy:
		return &o.Status
	case *v1alpha1.BackendTrafficPolicy:
		return &o.Status
	case *v1alpha1.RateLimitPolicy:
		return &o.Status
	case *v1alpha1.MeshConfig:
		return &o.Status.Status
	}
	return nil
}

var _ manager.LeaderElectionRunnable = (*Writer)(nil)
