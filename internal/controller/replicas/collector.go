package replicas

import (
	"context"
	"fmt"
	"maps"
	"strings"
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

	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/translator"
)

// Notifier is told which policies' peer reports changed (the status
// writer).
type Notifier interface {
	ProgrammedChanged(keys ...translator.PolicyKey)
	Resync()
}

// Collector reads the replicas' reports. It serves the other replicas'
// distributions to the status writer (status.PeerSource) and every live
// replica's Sections, its own included, to whoever asks (the root
// rotation driver). It watches the report Leases, tells the writer which
// policies a change concerns, and expires reports it has not seen renewed
// within the deadline, on its own clock: it stops counting them and, while
// this replica leads (Leading), deletes their Lease.
//
// It watches on every replica, not only the leader (docs/design/152): a
// replica elected after the leader died has then watched the dead
// leader's report stop changing since it died, and stops counting it
// when the deadline passes since the leader's last write — not a whole
// deadline after its own election, which held every policy changed
// meanwhile Pending for 20 s more.
type Collector struct {
	o      Options
	cs     kubernetes.Interface
	log    logr.Logger
	notify Notifier

	mu     sync.RWMutex
	synced bool
	peers  map[string]peer   // every live report, this replica's own included
	rvs    map[string]string // each report Lease's resourceVersion, as last seen
	uids   map[string]types.UID
	wake   []chan struct{}
	// leading: this replica's leader term runs (Leading); expired
	// reports' Leases are deleted only then. unreaped: reports expired
	// while not leading, whose Leases the next term deletes.
	leading  bool
	unreaped map[string]victim
}

// victim is an expired report's Lease, deleted only if unchanged since.
type victim struct {
	name string
	uid  types.UID
	rv   string
}

// NewCollector returns a collector of the reports in o.Namespace; o.Name
// is this replica (its own distribution is fresher in memory, so
// PeerReports leaves it out). Call SetNotifier before the manager starts.
func NewCollector(cs kubernetes.Interface, o Options, log logr.Logger) (*Collector, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Collector{o: o, cs: cs, log: log, notify: nopNotifier{}, peers: map[string]peer{}, rvs: map[string]string{}, uids: map[string]types.UID{}, unreaped: map[string]victim{}}, nil
}

// SetNotifier sets who hears about changes (the status writer, which in
// turn reads PeerReports: hence not a constructor argument).
func (c *Collector) SetNotifier(n Notifier) { c.notify = n }

type nopNotifier struct{}

func (nopNotifier) ProgrammedChanged(...translator.PolicyKey) {}
func (nopNotifier) Resync()                                   {}

// Name is this replica's name.
func (c *Collector) Name() string { return c.o.Name }

// Subscribe returns a channel that receives (without blocking the
// collector; one pending signal at most) when a report's sections may have
// changed: a report changed, appeared or went away. Call it before Start.
func (c *Collector) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.wake = append(c.wake, ch)
	c.mu.Unlock()
	return ch
}

func (c *Collector) poke() {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, ch := range c.wake {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Sections returns section name of every live report (seen to change
// within the deadline), this replica's own included, by replica; the value
// is "" when a report lacks the section (its owner has not Set it, or let
// it lapse). ok is false until the reports have been read (Start lists
// them), and after the collector stopped: nothing is known then.
//
// The map is as fresh as the collector's watch; before acting on it,
// Refresh, so that a replica that wrote its report before the call is in it.
func (c *Collector) Sections(name string) (reports map[string]string, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil, false
	}
	now := c.o.Clock.Now()
	key := SectionAnnotation(name)
	out := make(map[string]string, len(c.peers))
	for n, p := range c.peers {
		if now.Sub(p.seen) <= c.o.Deadline {
			out[n] = p.sections[key]
		}
	}
	return out, true
}

// Refresh lists the report Leases from the API server (a consistent read)
// and takes in every report the watch has not delivered yet. After it
// returns, Sections includes every report Lease that existed when it was
// called and has not expired: a new replica's report, written before it
// served anything, cannot be missed by a decision taken after Refresh
// because the watch lagged. Reports already known are left to the watch
// (an older version must not replace a newer one).
func (c *Collector) Refresh(ctx context.Context) error {
	c.mu.RLock()
	synced := c.synced
	c.mu.RUnlock()
	if !synced {
		return fmt.Errorf("the replica reports in %s have not been read yet", c.o.Namespace)
	}
	list, err := c.cs.CoordinationV1().Leases(c.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: c.selector()})
	if err != nil {
		return fmt.Errorf("listing the replica reports in %s: %w", c.o.Namespace, err)
	}
	for i := range list.Items {
		l := &list.Items[i]
		c.mu.RLock()
		_, known := c.rvs[l.Name]
		c.mu.RUnlock()
		if !known {
			c.observe(l)
		}
	}
	return nil
}

func (c *Collector) selector() string {
	return labels.SelectorFromSet(labels.Set{LabelKey: LabelValue}).String()
}

// NeedLeaderElection: every replica watches the reports, so that a new
// leader knows them, and how long each has not changed, at once.
func (c *Collector) NeedLeaderElection() bool { return false }

// Leading returns the leader's part of the collector, for the leader's
// terms: while it runs, this replica deletes the Leases of expired
// reports (those that expired before the term first).
func (c *Collector) Leading() *Leading { return &Leading{c: c} }

// Leading is the Collector's leader-only duty.
type Leading struct{ c *Collector }

// NeedLeaderElection: only the leader deletes other replicas' reports.
func (l *Leading) NeedLeaderElection() bool { return true }

// Start marks this replica as leading until ctx ends, and deletes the
// Leases of the reports that expired before.
func (l *Leading) Start(ctx context.Context) error {
	c := l.c
	c.mu.Lock()
	c.leading = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.leading = false
		c.mu.Unlock()
	}()
	c.reap(ctx)
	<-ctx.Done()
	return nil
}

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

// Synced implements status.PeerSource: the reports have been read (Start's
// first list is in) and the collector has not stopped.
func (c *Collector) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Start watches the reports until ctx ends.
func (c *Collector) Start(ctx context.Context) error {
	selector := c.selector()
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
	peersGauge.Set(float64(c.othersLocked()))
	c.mu.Unlock()
	c.log.Info("counting other replicas' proxies in policy status", "replicas", c.names())
	c.notify.Resync()
	c.poke()
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
	if !ok {
		return
	}
	self := l.Name == c.o.Name
	var snap Snapshot
	var err error
	if v, ok := l.Annotations[Annotation]; ok {
		snap, err = Decode(v)
	}
	sections := map[string]string{}
	for k, v := range l.Annotations {
		if strings.HasPrefix(k, "weft.dev/") && k != Annotation {
			sections[k] = v
		}
	}
	c.mu.Lock()
	if c.rvs[l.Name] == l.ResourceVersion {
		c.mu.Unlock()
		return
	}
	delete(c.unreaped, l.Name) // renewed: live again
	c.rvs[l.Name], c.uids[l.Name] = l.ResourceVersion, l.UID
	old, known := c.peers[l.Name]
	// A report this replica does not understand (another version during
	// an upgrade, or edited by hand) holds nothing back, but expires like
	// any other.
	c.peers[l.Name] = peer{snap: snap, sections: sections, seen: c.o.Clock.Now(), ignored: err != nil, self: self}
	synced := c.synced
	if synced {
		peersGauge.Set(float64(c.othersLocked()))
	}
	c.mu.Unlock()
	if !known || !maps.Equal(old.sections, sections) {
		c.poke()
	}
	if self {
		return // this replica's distribution is read from memory
	}
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

// othersLocked counts the reports of other replicas.
func (c *Collector) othersLocked() int {
	n := 0
	for _, p := range c.peers {
		if !p.self {
			n++
		}
	}
	return n
}

// forget drops a replica whose report was deleted.
func (c *Collector) forget(name string) {
	c.mu.Lock()
	p, known := c.peers[name]
	delete(c.peers, name)
	delete(c.rvs, name)
	delete(c.uids, name)
	delete(c.unreaped, name)
	synced := c.synced
	if synced {
		peersGauge.Set(float64(c.othersLocked()))
	}
	c.mu.Unlock()
	if known {
		c.poke()
	}
	if known && synced && !p.self {
		c.log.Info("a replica's report is gone", "replica", name)
		c.notify.Resync()
	}
}

// expire stops counting the reports not seen within the deadline, and,
// while leading, deletes their Leases (unless they were renewed
// meanwhile).
func (c *Collector) expire(ctx context.Context) {
	now := c.o.Clock.Now()
	var dead []victim
	c.mu.Lock()
	for n, p := range c.peers {
		if now.Sub(p.seen) > c.o.Deadline {
			dead = append(dead, victim{n, c.uids[n], c.rvs[n]})
			delete(c.peers, n)
			c.unreaped[n] = victim{n, c.uids[n], c.rvs[n]}
		}
	}
	peersGauge.Set(float64(c.othersLocked()))
	c.mu.Unlock()
	if len(dead) > 0 {
		c.notify.Resync()
		c.poke()
	}
	for _, v := range dead {
		expired.Inc()
		c.log.Info("a replica's report was not seen renewed within the deadline: no longer counting it",
			"replica", v.name, "deadline", c.o.Deadline)
	}
	c.reap(ctx)
}

// reap deletes, while leading, the Leases of expired reports, each only
// if unchanged since it expired.
func (c *Collector) reap(ctx context.Context) {
	c.mu.Lock()
	if !c.leading {
		c.mu.Unlock()
		return
	}
	dead := make([]victim, 0, len(c.unreaped))
	for _, v := range c.unreaped {
		dead = append(dead, v)
	}
	clear(c.unreaped)
	c.mu.Unlock()
	for _, v := range dead {
		c.log.Info("deleting an expired replica report", "replica", v.name)
		uid, rv := v.uid, v.rv
		err := c.cs.CoordinationV1().Leases(c.o.Namespace).Delete(ctx, v.name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			// A conflict means it was renewed: the watch brings it back.
			// Otherwise the next tick tries again, unless it was renewed.
			c.log.Error(err, "deleting an expired replica report", "lease", c.o.Namespace+"/"+v.name)
			c.mu.Lock()
			if _, live := c.peers[v.name]; !live && c.rvs[v.name] == v.rv {
				c.unreaped[v.name] = v
			}
			c.mu.Unlock()
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
