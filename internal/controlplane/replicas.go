package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Each replica knows only its own proxies' ACKs. Decisions that need every
// connected proxy (a root rotation step) need every replica's fact, so each
// replica publishes its facts in its own Lease, weft-replica-<id> in the
// controller's namespace: one annotation per topic, and the Lease's renew
// time as a heartbeat. The leader reads the Leases that have not expired:
// a replica that died stops renewing, its proxies reconnect to the others,
// and after the Lease duration its last report stops counting.
const (
	// ReplicaReportLabel marks the report Leases (the leader lists them by
	// it, and never touches the leader-election Lease).
	ReplicaReportLabel = "weft.dev/replica-report"
	// replicaReportPrefix names each replica's Lease.
	replicaReportPrefix = "weft-replica-"
	// reportAnnotationPrefix + topic holds one topic's report (JSON).
	reportAnnotationPrefix = "weft.dev/report-"
	// reportTTL is how long a report counts after its last renewal;
	// replicas renew at a third of it.
	reportTTL = 30 * time.Second
	// reportGC: the leader deletes Leases expired this long ago (replicas
	// that are gone for good; pods get new names).
	reportGC = 10 * time.Minute
)

// replicaReports publishes this replica's reports and lists everyone's.
type replicaReports struct {
	c     client.Client
	ns    string
	id    string
	clock clock.PassiveClock
}

// replicaReport is one replica's report on a topic.
type replicaReport struct {
	Replica string
	// Expires is when the report stops counting (renew time + duration).
	Expires time.Time
	// Value is the topic's annotation; empty when the replica has not
	// reported on the topic.
	Value string
}

func newReplicaReports(c client.Client, ns, id string, clk clock.PassiveClock) *replicaReports {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if id == "" {
		id = replicaID()
	}
	return &replicaReports{c: c, ns: ns, id: id, clock: clk}
}

// replicaID is the host name (the pod name in a cluster) with a random
// suffix, so that two processes on one host (tests, a restart overlapping
// its predecessor) never share a report.
func replicaID() string {
	h, _ := os.Hostname()
	h = strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(h), "-"), "-.")
	if len(h) > 200 {
		h = h[:200]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	if h == "" {
		h = "weft"
	}
	return h + "-" + hex.EncodeToString(b)
}

var nonDNS = regexp.MustCompile(`[^a-z0-9.-]+`)

func (r *replicaReports) name() string { return replicaReportPrefix + r.id }

// publish sets this replica's report on topic and renews its Lease.
func (r *replicaReports) publish(ctx context.Context, topic, value string) error {
	now := metav1.NewMicroTime(r.clock.Now())
	var l coordinationv1.Lease
	err := r.c.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: r.name()}, &l)
	if apierrors.IsNotFound(err) {
		l = coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.name(),
				Labels:      map[string]string{ReplicaReportLabel: "true", "app.kubernetes.io/managed-by": "weft"},
				Annotations: map[string]string{reportAnnotationPrefix + topic: value}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr(r.id), LeaseDurationSeconds: ptr(int32(reportTTL / time.Second)),
				AcquireTime: &now, RenewTime: &now},
		}
		if err := r.c.Create(ctx, &l); err != nil {
			return fmt.Errorf("creating this replica's report Lease %s/%s: %w", r.ns, r.name(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading this replica's report Lease %s/%s: %w", r.ns, r.name(), err)
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[reportAnnotationPrefix+topic] = value
	l.Spec.RenewTime = &now
	l.Spec.LeaseDurationSeconds = ptr(int32(reportTTL / time.Second))
	if err := r.c.Update(ctx, &l); err != nil {
		return fmt.Errorf("renewing this replica's report Lease %s/%s: %w", r.ns, r.name(), err)
	}
	return nil
}

// list returns the reports on topic of every replica whose Lease has not
// expired, and the names of Leases expired for longer than reportGC.
func (r *replicaReports) list(ctx context.Context, topic string) (live []replicaReport, dead []string, err error) {
	var leases coordinationv1.LeaseList
	if err := r.c.List(ctx, &leases, client.InNamespace(r.ns), client.MatchingLabels{ReplicaReportLabel: "true"}); err != nil {
		return nil, nil, fmt.Errorf("listing replica reports in %s: %w", r.ns, err)
	}
	now := r.clock.Now()
	for _, l := range leases.Items {
		rep := replicaReport{Replica: strings.TrimPrefix(l.Name, replicaReportPrefix), Value: l.Annotations[reportAnnotationPrefix+topic]}
		if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
			rep.Expires = l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		}
		switch {
		case now.Before(rep.Expires):
			live = append(live, rep)
		case now.Sub(rep.Expires) > reportGC:
			dead = append(dead, l.Name)
		}
	}
	return live, dead, nil
}

// forget deletes report Leases of replicas gone for good (leader).
func (r *replicaReports) forget(ctx context.Context, names []string) {
	for _, n := range names {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: n}}
		_ = client.IgnoreNotFound(r.c.Delete(ctx, l))
	}
}
