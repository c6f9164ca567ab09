package replicas

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
)

// Defaults of Options.
const (
	// DefaultMinInterval spaces a replica's report writes: at most four a
	// second, however many ACKs arrive.
	DefaultMinInterval = 250 * time.Millisecond
	// DefaultHeartbeat is how often an unchanged report is renewed.
	DefaultHeartbeat = 5 * time.Second
	// DefaultDeadline is how long the leader counts a report it has not
	// seen renewed: four missed heartbeats.
	DefaultDeadline = 20 * time.Second
)

// Options configure a Publisher and a Collector; the zero value of each
// field is its default.
type Options struct {
	// Namespace holds the report Leases (the controller's namespace).
	Namespace string
	// Name is this replica's name, and its report Lease's (the pod name).
	Name string
	// MinInterval is the least time between two report writes.
	MinInterval time.Duration
	// Heartbeat is how often a report is rewritten when nothing changed.
	Heartbeat time.Duration
	// Deadline is how long a report counts after the leader last saw it
	// change; an older one is ignored and its Lease deleted.
	Deadline time.Duration
	// Clock is the real clock if nil.
	Clock clock.WithTicker
}

func (o Options) withDefaults() (Options, error) {
	if o.MinInterval == 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Deadline == 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Namespace == "" {
		return o, fmt.Errorf("replica reports need a namespace")
	}
	if errs := validation.IsDNS1123Subdomain(o.Name); len(errs) > 0 {
		return o, fmt.Errorf("replica name %q cannot name its report Lease: %v", o.Name, errs)
	}
	if o.Deadline <= o.Heartbeat {
		return o, fmt.Errorf("replica report deadline %v must exceed the heartbeat %v", o.Deadline, o.Heartbeat)
	}
	return o, nil
}

// Publisher keeps this replica's report Lease current. It runs on every
// replica (the leader's report matters when leadership moves). The report
// is the replica's distribution (annotation Annotation, read from source)
// and any Sections other parts of the controller publish through it, each
// in its own annotation of the same Lease. Tell it that the distribution
// may have changed with Changed (a Section's Set does so itself); it
// coalesces any number of changes into one write per MinInterval, and
// writes only what differs from the last write, except for the heartbeat.
type Publisher struct {
	o      Options
	leases coordinationclient.LeaseInterface
	source func() Snapshot // nil: no distribution annotation
	log    logr.Logger
	kick   chan struct{}

	mu       sync.Mutex
	sections map[string]*sectionState // by annotation key
	written  map[string]string        // the annotations of the last successful write
	wrote    chan struct{}            // closed (and replaced) at each successful write
	stale    bool                     // the last successful write is older than the deadline

	// Only the Start goroutine touches these.
	lease     *coordinationv1.Lease // as last written
	lastWrite time.Time             // successful, by o.Clock
	started   time.Time
}

// sectionState is a Section's value as its owner last Set it.
type sectionState struct {
	value string
	set   bool
	setAt time.Time
	// dropped: left out of the report because it was not Set within the
	// deadline (logged once per lapse).
	dropped bool
}

// NewPublisher returns a publisher of source's snapshots (source may be
// nil: a report with Sections only).
func NewPublisher(cs kubernetes.Interface, source func() Snapshot, o Options, log logr.Logger) (*Publisher, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Publisher{o: o, leases: cs.CoordinationV1().Leases(o.Namespace), source: source, log: log, kick: make(chan struct{}, 1),
		sections: map[string]*sectionState{}, wrote: make(chan struct{})}, nil
}

// Name is this replica's name, its report Lease's.
func (p *Publisher) Name() string { return p.o.Name }

// Section is one named part of this replica's report besides the
// distribution, in annotation SectionAnnotation(name) of the same Lease:
// written with the same coalescing and heartbeat, deleted with the Lease,
// read on the leader with Collector.Sections. Its owner Sets it whenever
// it has looked (at least every half deadline); a value not Set again
// within the deadline is left out of the next write, so an owner that has
// stalled stops vouching for facts it no longer checks, even though the
// Lease's heartbeat goes on: the leader reads the section as absent (not
// current) rather than trusting a frozen value.
type Section struct {
	p   *Publisher
	key string
}

// SectionAnnotation is the annotation that holds section name.
func SectionAnnotation(name string) string { return "weft.dev/" + name }

// Section returns the section name of this replica's report, making it on
// the first call. Names are DNS labels other than "distribution".
func (p *Publisher) Section(name string) (*Section, error) {
	key := SectionAnnotation(name)
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 || key == Annotation {
		return nil, fmt.Errorf("report section %q: must be a DNS label other than distribution", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sections[key] == nil {
		p.sections[key] = &sectionState{}
	}
	return &Section{p: p, key: key}, nil
}

// Set publishes value as the section's current content. It never blocks;
// a changed value is written with the next write, an unchanged one only
// counts as fresh.
func (s *Section) Set(value string) {
	p := s.p
	p.mu.Lock()
	st := p.sections[s.key]
	changed := !st.set || st.value != value || st.dropped
	st.value, st.set, st.setAt = value, true, p.o.Clock.Now()
	if st.dropped {
		st.dropped = false
		p.log.Info("report section is current again", "section", s.key)
	}
	p.mu.Unlock()
	if changed {
		p.Changed()
	}
}

// Written waits until the section's current value is in the Lease (a write
// carrying it succeeded), or ctx ends (its error). Publishing must be
// running (Start).
func (s *Section) Written(ctx context.Context) error {
	p := s.p
	for {
		p.mu.Lock()
		st := p.sections[s.key]
		v, ok := p.written[s.key]
		wrote := p.wrote
		p.mu.Unlock()
		if st.set && ok && v == st.value {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wrote:
		}
	}
}

// Current is the section's value as the next write will carry it: "" once
// it was not Set within the deadline (or never).
func (s *Section) Current() string {
	v, _ := s.p.sectionValue(s.key, s.p.o.Clock.Now())
	return v
}

// sectionValue is the section's value at now, and whether it is in the
// report (Set within the deadline).
func (p *Publisher) sectionValue(key string, now time.Time) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.sections[key]
	if st == nil || !st.set || now.Sub(st.setAt) > p.o.Deadline {
		return "", false
	}
	return st.value, true
}

// Changed says the distribution may have changed. It never blocks.
func (p *Publisher) Changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// NeedLeaderElection: every replica reports.
func (p *Publisher) NeedLeaderElection() bool { return false }

// Start writes the report until ctx ends, then deletes it: a replica that
// stops cleanly leaves no report to wait for.
func (p *Publisher) Start(ctx context.Context) error {
	defer p.remove()
	retry := time.Duration(0)
	p.started = p.o.Clock.Now()
	p.Changed() // the first report
	for {
		// Wake for a change, for the heartbeat, or to retry a failed write.
		wake := p.o.Heartbeat - p.o.Clock.Since(p.lastWrite)
		if retry > 0 {
			wake = retry // after a failure, the heartbeat is overdue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
		case <-p.o.Clock.After(max(wake, 0)):
		}
		// Coalesce: changes arriving until MinInterval after the last
		// write join this one.
		if wait := p.o.MinInterval - p.o.Clock.Since(p.lastWrite); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-p.o.Clock.After(wait):
			}
		}
		select {
		case <-p.kick:
		default:
		}
		if err := p.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			retry = min(max(2*retry, p.o.MinInterval), p.o.Heartbeat)
			reportWrites.WithLabelValues("error").Inc()
			p.log.Error(err, "writing this replica's report; will retry", "lease", p.o.Namespace+"/"+p.o.Name, "in", retry)
			p.checkStale(err)
			continue
		}
		retry = 0
		p.checkStale(nil)
	}
}

// checkStale says, in a log line and weft_replica_report_stale, when this
// replica's report has not been written for longer than the deadline: the
// leader then no longer counts this replica (its proxies are left out of
// policy status, and a root rotation may move on without their facts)
// although it may still serve proxies. Nothing this replica writes can
// reach the leader meanwhile; an operator can (docs/design/042).
func (p *Publisher) checkStale(err error) {
	since := p.lastWrite
	if since.IsZero() {
		since = p.started
	}
	age := p.o.Clock.Since(since)
	stale := err != nil && age > p.o.Deadline
	p.mu.Lock()
	was := p.stale
	p.stale = stale
	p.mu.Unlock()
	switch {
	case stale && !was:
		staleGauge.Set(1)
		p.log.Error(err, "this replica's report has not been written for longer than the deadline: the leader no longer counts this replica, so its proxies are missing from policy status and a root rotation may move on without their facts; check this replica's access to the API server (Leases in its namespace)",
			"lease", p.o.Namespace+"/"+p.o.Name, "since", since, "deadline", p.o.Deadline)
	case !stale && was:
		staleGauge.Set(0)
		p.log.Info("this replica's report is written again; the leader counts it", "lease", p.o.Namespace+"/"+p.o.Name)
	}
}

// want is the report's annotations now: the distribution and the
// sections Set within the deadline.
func (p *Publisher) want() map[string]string {
	out := map[string]string{}
	if p.source != nil {
		out[Annotation] = Encode(p.source())
	}
	now := p.o.Clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, st := range p.sections {
		if !st.set {
			continue
		}
		if now.Sub(st.setAt) > p.o.Deadline {
			if !st.dropped {
				st.dropped = true
				p.log.Error(nil, "a report section was not refreshed within the deadline: leaving it out of this replica's report, so the leader does not take its last value as current",
					"section", key, "lastSet", st.setAt, "deadline", p.o.Deadline)
			}
			continue
		}
		out[key] = st.value
	}
	return out
}

// publish writes the report if it changed or the heartbeat is due.
func (p *Publisher) publish(ctx context.Context) error {
	report := p.want()
	p.mu.Lock()
	same := maps.Equal(report, p.written)
	p.mu.Unlock()
	if same && p.lease != nil && p.o.Clock.Since(p.lastWrite) < p.o.Heartbeat {
		return nil
	}
	now := metav1.NewMicroTime(p.o.Clock.Now())
	for attempt := 0; ; attempt++ {
		var err error
		if p.lease == nil {
			p.lease, err = p.leases.Get(ctx, p.o.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				p.lease, err = nil, nil
			} else if err != nil {
				p.lease = nil
				return err
			}
		}
		var out *coordinationv1.Lease
		if p.lease == nil {
			out, err = p.leases.Create(ctx, p.desired(&coordinationv1.Lease{}, report, now), metav1.CreateOptions{})
		} else {
			out, err = p.leases.Update(ctx, p.desired(p.lease.DeepCopy(), report, now), metav1.UpdateOptions{})
		}
		switch {
		case err == nil:
			p.lease, p.lastWrite = out, p.o.Clock.Now()
			p.mu.Lock()
			p.written = report
			close(p.wrote)
			p.wrote = make(chan struct{})
			p.mu.Unlock()
			reportWrites.WithLabelValues("written").Inc()
			size := 0
			for _, v := range report {
				size += len(v)
			}
			reportBytes.Set(float64(size))
			lastWritten.Set(float64(p.lastWrite.UnixNano()) / 1e9)
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err)) && attempt < 2:
			// Someone else touched it (the leader deleted it as expired,
			// or a previous process of this pod left it): read it again.
			p.lease = nil
		default:
			p.lease = nil
			return err
		}
	}
}

// desired sets l to this replica's report Lease with the report's
// annotations (removing those of this publisher that are not in it),
// renewed at now.
func (p *Publisher) desired(l *coordinationv1.Lease, report map[string]string, now metav1.MicroTime) *coordinationv1.Lease {
	l.Name, l.Namespace = p.o.Name, p.o.Namespace
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[LabelKey] = LabelValue
	l.Labels["app.kubernetes.io/name"] = "weft-controller"
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	delete(l.Annotations, Annotation)
	p.mu.Lock()
	for key := range p.sections {
		delete(l.Annotations, key)
	}
	p.mu.Unlock()
	maps.Copy(l.Annotations, report)
	holder := p.o.Name
	seconds := int32((p.o.Deadline + time.Second - 1) / time.Second)
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &seconds
	if l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &now
	}
	l.Spec.RenewTime = &now
	return l
}

// remove deletes this replica's report, if it wrote one.
func (p *Publisher) remove() {
	if p.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uid := p.lease.UID
	err := p.leases.Delete(ctx, p.o.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		p.log.Error(err, "deleting this replica's report; the leader removes it after the deadline", "lease", p.o.Namespace+"/"+p.o.Name, "deadline", p.o.Deadline)
		return
	}
	p.log.Info("deleted this replica's report", "lease", p.o.Namespace+"/"+p.o.Name)
}
