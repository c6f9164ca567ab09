package replicas

import (
	"context"
	"sync"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/internal/status"
	"github.com/weftmesh/weft/translator"
)

// Notifier is told which policies' peer reports changed (the status
// writer).
type Notifier interface {
	ProgrammedChanged(keys ...translator.PolicyKey)
	Resync()
}

// Collector reads the other replicas' reports on the leader and serves
// them to the status writer (status.PeerSource). It watches the report
// Leases, tells the writer which policies a change concerns, and expires
// reports it has not seen renewed within the deadline: it stops counting
// them and deletes their Lease.
type Collector struct {
	o      Options
	cs     kubernetes.Interface
	log    logr.Logger
	notify Notifier

	mu     sync.RWMutex
	synced bool
	peers  map[string]peer
	rvs    map[string]string // each peer Lease's resourceVersion, as last seen
	uids   map[string]types.UID
}

// NewCollector returns a collector of the reports in o.Namespace, other
// than o.Name's (this replica's own distribution is fresher in memory).
// Call SetNotifier before the manager starts.
func NewCollector(cs kubernetes.Interface, o Options, log logr.Logger) (*Collector, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Collector{o: o, cs: cs, log: log, peers: map[string]peer{}, rvs: map[string]string{}, uids: map[string]types.UID{}}, nil
}

// SetNotifier sets who hears about changes (the status writer, which in
// turn reads PeerReports: hence not a constructor argument).
func (c *Collector) SetNotifier(n Notifier) { c.notify = n }

// NeedLeaderElection: only the leader writes status.
func (c *Collector) NeedLeaderElection() bool { return true }

var _ status.PeerSource = (*Collector)(nil)

// PeerReports implements status.PeerSource. Until the reports have been
// read, it answers with one report that is not Known, so that no policy is
// called Programmed from the leader's proxies alone.
func (c *Collector) PeerReports(key translator.PolicyKey) []status.Report {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return []status.Report{{}}
	}
	return reportsFor(key, c.peers, c.o.Clock.Now(), c.o.Deadline)
}

// Start watches the reports until ctx ends.
func (c *Collector) Start(ctx context.Context) error {
	selector := labels.SelectorFromSet(labels.Set{LabelKey: LabelValue}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(c.cs, 0, informers.WithNamespace(c.o.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Coordination().V1().Leases().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.observe(obj) },
		UpdateFunc: func(_, obj any) { c.observe(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if l, ok := obj.(*coordinationv1.Lease); ok {
				c.forget(l.Name)
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // ctx ended
	}
	c.mu.Lock()
	c.synced = true
	peersGauge.Set(float64(len(c.peers)))
	c.mu.Unlock()
	c.log.Info("counting other replicas' proxies in policy status", "replicas", c.names())
	c.notify.Resync()
	defer func() {
		c.mu.Lock()
		c.synced = false
		c.mu.Unlock()
		peersGauge.Set(0)
	}()

	tick := c.o.Clock.NewTicker(c.o.Deadline / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
			c.expire(ctx)
		}
	}
}

// observe records a report Lease as added or changed.
func (c *Collector) observe(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || l.Name == c.o.Name {
		return
	}
	snap, err := Decode(l.Annotations[Annotation])
	c.mu.Lock()
	if c.rvs[l.Name] == l.ResourceVersion {
		c.mu.Unlock()
		return
	}
	c.rvs[l.Name], c.uids[l.Name] = l.ResourceVersion, l.UID
	old, known := c.peers[l.Name]
	// A report this replica does not understand (another version during
	// an upgrade, or edited by hand) holds nothing back, but expires like
	// any other.
	c.peers[l.Name] = peer{snap: snap, seen: c.o.Clock.Now(), ignored: err != nil}
	synced := c.synced
	if synced {
		peersGauge.Set(float64(len(c.peers)))
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Error(err, "ignoring a replica's distribution report", "lease", l.Namespace+"/"+l.Name)
	}
	if !synced {
		return // Start resyncs everything once the first list is in
	}
	switch {
	case err != nil || !known || old.ignored:
		c.notify.Resync()
	default:
		keys, all := changedKeys(old.snap, snap)
		if all {
			c.notify.Resync()
		} else if len(keys) > 0 {
			c.notify.ProgrammedChanged(keys...)
		}
	}
}

// forget drops a replica whose report was deleted.
func (c *Collector) forget(name string) {
	c.mu.Lock()
	_, known := c.peers[name]
	delete(c.peers, name)
	delete(c.rvs, name)
	delete(c.uids, name)
	synced := c.synced
	if synced {
		peersGauge.Set(float64(len(c.peers)))
	}
	c.mu.Unlock()
	if known && synced {
		c.log.Info("a replica's distribution report is gone", "replica", name)
		c.notify.Resync()
	}
}

// expire stops counting the reports not seen within the deadline, and
// deletes their Leases (unless they were renewed meanwhile).
func (c *Collector) expire(ctx context.Context) {
	now := c.o.Clock.Now()
	type victim struct {
		name string
		uid  types.UID
		rv   string
	}
	var dead []victim
	c.mu.Lock()
	for n, p := range c.peers {
		if now.Sub(p.seen) > c.o.Deadline {
			dead = append(dead, victim{n, c.uids[n], c.rvs[n]})
			delete(c.peers, n)
		}
	}
	peersGauge.Set(float64(len(c.peers)))
	c.mu.Unlock()
	if len(dead) == 0 {
		return
	}
	c.notify.Resync()
	for _, v := range dead {
		expired.Inc()
		c.log.Info("a replica's distribution report was not renewed within the deadline: no longer counting its proxies, deleting it",
			"replica", v.name, "deadline", c.o.Deadline)
		uid, rv := v.uid, v.rv
		err := c.cs.CoordinationV1().Leases(c.o.Namespace).Delete(ctx, v.name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			// A conflict means it was renewed: the watch brings it back.
			c.log.Error(err, "deleting an expired replica report", "lease", c.o.Namespace+"/"+v.name)
		}
	}
}

func (c *Collector) names() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.peers))
	for n := range c.peers {
		out = append(out, n)
	}
	return out
}
