package replicas

import (
	"context"
	"fmt"
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
// replica (the leader's report matters when leadership moves). Tell it
// that the distribution may have changed with Changed; it reads the new
// state with the source function, coalescing any number of changes into
// one write per MinInterval, and writes only what differs from the last
// write, except for the heartbeat.
type Publisher struct {
	o      Options
	leases coordinationclient.LeaseInterface
	source func() Snapshot
	log    logr.Logger
	kick   chan struct{}

	// Only the Start goroutine touches these.
	lease     *coordinationv1.Lease // as last written
	written   string                // its annotation
	lastWrite time.Time             // successful, by o.Clock
}

// NewPublisher returns a publisher of source's snapshots.
func NewPublisher(cs kubernetes.Interface, source func() Snapshot, o Options, log logr.Logger) (*Publisher, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Publisher{o: o, leases: cs.CoordinationV1().Leases(o.Namespace), source: source, log: log, kick: make(chan struct{}, 1)}, nil
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
			p.log.Error(err, "writing this replica's distribution report; will retry", "lease", p.o.Namespace+"/"+p.o.Name, "in", retry)
			continue
		}
		retry = 0
	}
}

// publish writes the report if it changed or the heartbeat is due.
func (p *Publisher) publish(ctx context.Context) error {
	report := Encode(p.source())
	if report == p.written && p.lease != nil && p.o.Clock.Since(p.lastWrite) < p.o.Heartbeat {
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
			p.lease, p.written, p.lastWrite = out, report, p.o.Clock.Now()
			reportWrites.WithLabelValues("written").Inc()
			reportBytes.Set(float64(len(report)))
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

// desired sets l to this replica's report Lease with the report, renewed
// at now.
func (p *Publisher) desired(l *coordinationv1.Lease, report string, now metav1.MicroTime) *coordinationv1.Lease {
	l.Name, l.Namespace = p.o.Name, p.o.Namespace
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[LabelKey] = LabelValue
	l.Labels["app.kubernetes.io/name"] = "weft-controller"
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[Annotation] = report
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
		p.log.Error(err, "deleting this replica's distribution report; the leader removes it after the deadline", "lease", p.o.Namespace+"/"+p.o.Name, "deadline", p.o.Deadline)
		return
	}
	p.log.Info("deleted this replica's distribution report", "lease", p.o.Namespace+"/"+p.o.Name)
}
