package controller

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Leader election timings: controller-runtime's defaults, which weft had
// before it ran its own elector. A replica that cannot renew for
// leaseRenewDeadline ends its term; another can take the Lease
// leaseDuration after its last renewal.
const (
	leaseDuration      = 15 * time.Second
	leaseRenewDeadline = 10 * time.Second
	leaseRetryPeriod   = 2 * time.Second
)

// leaderTerms runs the leader's work (status, the root CA, the webhook's
// caBundle, the root rotation, the missed-injection check, reading the
// other replicas' reports) for each term this replica holds the
// weft-controller Lease, and campaigns again when a term ends.
//
// controller-runtime's own leader election exits the process when the
// Lease cannot be renewed. For weft that turned an API server outage of
// more than 10 s into the leader dropping every xDS stream it served
// (issue 13, docs/design/077): its proxies reconnected to a replica that
// could not review their tokens while the API server was away, or — with
// one replica — had no control plane until the restarted process could
// read the CA again. The xDS server, the mesh loop and the webhook do not
// need the Lease, so only the leader's work stops; a new term starts it
// again with fresh state (each runnable's Start may be called again after
// it returned).
type leaderTerms struct {
	cs        kubernetes.Interface
	namespace string
	identity  string
	log       logr.Logger
	runnables []manager.Runnable

	leaseDuration, renewDeadline, retryPeriod time.Duration
	// onTerm, when set, hears each term's start and end (tests).
	onTerm func(leading bool)
}

func newLeaderTerms(cs kubernetes.Interface, namespace string, log logr.Logger) *leaderTerms {
	host, _ := os.Hostname()
	return &leaderTerms{cs: cs, namespace: namespace, identity: host + "_" + string(uuid.NewUUID()), log: log,
		leaseDuration: leaseDuration, renewDeadline: leaseRenewDeadline, retryPeriod: leaseRetryPeriod}
}

// NeedLeaderElection: the terms run on every replica; they hold the
// leader's work until this replica leads.
func (l *leaderTerms) NeedLeaderElection() bool { return false }

// Start campaigns until ctx ends, running the leader's work in each term.
// It returns an error when a runnable fails during a term (as the manager
// would), nil when ctx ends.
func (l *leaderTerms) Start(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.namespace, Name: LeaseName},
		Client:     l.cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.identity},
	}
	for ctx.Err() == nil {
		leading := make(chan context.Context)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			Name:          LeaseName,
			LeaseDuration: l.leaseDuration,
			RenewDeadline: l.renewDeadline,
			RetryPeriod:   l.retryPeriod,
			// A clean stop hands the Lease over at once.
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(term context.Context) {
					select {
					case leading <- term:
					case <-term.Done():
					}
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return err
		}
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			le.Run(ctx)
		}()
		select {
		case term := <-leading:
			err := l.term(term)
			<-ran
			if err != nil {
				return err
			}
			if ctx.Err() == nil {
				l.log.Info("lost the leader Lease (the API server did not answer within the renew deadline): the leader's work stopped; this replica keeps serving xDS and campaigns again",
					"lease", l.namespace+"/"+LeaseName, "renewDeadline", l.renewDeadline)
			}
		case <-ran:
		}
	}
	return nil
}

// term runs every runnable until term ends and all of them returned.
func (l *leaderTerms) term(term context.Context) error {
	if l.onTerm != nil {
		l.onTerm(true)
		defer l.onTerm(false)
	}
	term, cancel := context.WithCancel(term)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, r := range l.runnables {
		wg.Go(func() {
			if err := r.Start(term); err != nil && term.Err() == nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel() // a failing part ends the term, and the process
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// leaderAware is the manager as run.go adds to it: a runnable that needs
// leader election (controller-runtime's rule: it says so, or does not
// say) joins the leader's terms; any other goes to the manager.
type leaderAware struct {
	manager.Manager
	terms *leaderTerms // nil: no leader election, everything runs at once
}

func (m leaderAware) Add(r manager.Runnable) error {
	if m.terms == nil {
		return m.Manager.Add(r)
	}
	if le, ok := r.(manager.LeaderElectionRunnable); ok && !le.NeedLeaderElection() {
		return m.Manager.Add(r)
	}
	m.terms.runnables = append(m.terms.runnables, r)
	return nil
}
