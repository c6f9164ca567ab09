package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/controller/replicas"
)

// RotationDriver is the leader's half of a root rotation: it starts one
// when MeshConfig's spec.certificates.builtIn.rootGeneration rises above
// the root's generation, moves it one phase on (certs.Rotation.Advance)
// when every live replica reports that all its proxies hold what the
// phase waits for, persists each phase in the root Secrets (which every
// replica's Follower applies, and a new leader resumes from), and
// writes MeshConfig's status.rootRotation and RootRotation condition.
// The decisions are pure (planRotation, aggregateTrust,
// rootRotationStatus); this type does the reading and writing.
type RotationDriver struct {
	c     client.WithWatch
	store *builtin.RootStore
	// reports reads every live replica's trust section (its own included);
	// reportsChanged hears when one may have changed.
	reports        *replicas.Collector
	reportsChanged <-chan struct{}
	namespace      string
	log            logr.Logger
	clock          clock.PassiveClock // default the real clock
	// poll is how often it looks when no watch event woke it: default 1s
	// during a rotation, 10s otherwise.
	poll time.Duration
	// OnStep runs after each persisted step: the trust-bundle publisher
	// (internal/controller/trust) re-reads the root Secret at once.
	OnStep func()
	// forceGrace replaces ForceGrace (tests).
	forceGrace time.Duration
	// Events, when set, records a Warning Event on MeshConfig when a phase
	// is forced on past its timeout.
	Events EventRecorder
}

// EventRecorder is the part of client-go's events.EventRecorder the
// driver uses.
type EventRecorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...interface{})
}

// publication counts the weft-root-ca ConfigMaps (what workloads verify
// weft-controller's xDS certificate with; internal/controller/trust writes the root
// Secret's ca.crt into them) and those that hold the incoming root.
type publication struct{ have, total int }

// published reads the weft-root-ca ConfigMaps during AddNewRoot (the only
// phase that waits for them); otherwise it reports nothing to wait for.
func (d *RotationDriver) published(ctx context.Context, st builtin.TrustState) publication {
	if st.Rotation.Phase != certs.PhaseAddNewRoot {
		return publication{}
	}
	var cms corev1.ConfigMapList
	if err := d.c.List(ctx, &cms, client.MatchingFields{"metadata.name": dataplane.RootCAConfigMap}); err != nil {
		d.log.Error(err, "listing the weft-root-ca ConfigMaps")
		return publication{total: 1}
	}
	var p publication
	for _, cm := range cms.Items {
		p.total++
		if roots, err := certs.ParseCertificatesPEM([]byte(cm.Data[RootCAKey])); err == nil && bundleHas(roots, st.Rotation.Next) {
			p.have++
		}
	}
	return p
}

// NeedLeaderElection: one driver.
func (d *RotationDriver) NeedLeaderElection() bool { return true }

// Start drives until ctx ends.
func (d *RotationDriver) Start(ctx context.Context) error {
	if d.clock == nil {
		d.clock = clock.RealClock{}
	}
	wake := make(chan struct{}, 1)
	go watchWake(ctx, d.c, &corev1.SecretList{}, []client.ListOption{client.InNamespace(d.namespace), client.MatchingLabels{"app.kubernetes.io/component": "ca"}}, wake, d.log)
	go watchWake(ctx, d.c, &v1alpha1.MeshConfigList{}, nil, wake, d.log)
	for {
		rotating := d.step(ctx)
		wait := 10 * time.Second
		if rotating {
			wait = time.Second
		}
		if d.poll != 0 {
			wait = d.poll
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-d.reportsChanged:
		case <-time.After(wait):
		}
	}
}

// trustReports reads every live replica's trust facts.
func (d *RotationDriver) trustReports() trustReports {
	sections, known := d.reports.Sections(trustSection)
	r := trustReports{known: known, self: d.reports.Name()}
	for name, v := range sections {
		r.facts = append(r.facts, replicaFacts{Replica: name, Value: v})
	}
	slices.SortFunc(r.facts, func(a, b replicaFacts) int { return strings.Compare(a.Replica, b.Replica) })
	return r
}

// step reads everything, takes at most one action, and writes status. It
// reports whether a rotation is in progress.
func (d *RotationDriver) step(ctx context.Context) bool {
	st, err := d.store.LoadTrust(ctx)
	if err != nil {
		if !errors.Is(err, builtin.ErrRootNotFound) && !errors.Is(err, builtin.ErrInconsistent) && ctx.Err() == nil {
			d.log.Error(err, "reading the root CA Secrets")
		}
		return true
	}
	mc := readMeshConfig(ctx, d.c)
	want, provider := rotationRequest(mc)
	timeout := phaseTimeout(mc)
	now := d.clock.Now()
	pub := d.published(ctx, st)
	grace := d.forceGrace
	if grace == 0 {
		grace = ForceGrace
	}
	pc := phaseClock{now: now, timeout: timeout, grace: grace}
	p := planRotationAt(st, want, provider, d.trustReports(), pub, pc)
	if p.action == actionAdvance {
		// The collector's watch may lag behind a replica that has just
		// written its first (empty) report and started serving: read the
		// reports from the API server before moving on.
		if err := d.reports.Refresh(ctx); err != nil {
			if ctx.Err() == nil {
				d.log.Error(err, "reading the replica reports before a rotation step; retrying")
			}
			p = rotationPlan{waiting: "reading the controller replicas' reports before the next step: " + err.Error()}
		} else {
			p = planRotationAt(st, want, provider, d.trustReports(), pub, pc)
		}
	}
	var failed error
	switch p.action {
	case actionStart:
		st, failed = d.store.StartRotation(ctx, st, want)
		if failed == nil {
			d.log.Info("root rotation started", "generation", want, "newRoot", certs.Fingerprint(st.Next.Cert))
		}
	case actionAdvance:
		from, since := st.Rotation.Phase, st.PhaseSince
		st, failed = d.store.SetPhase(ctx, st, p.next)
		if failed == nil {
			d.log.Info("root rotation moved on", "from", from, "to", st.Rotation.Phase, "root", certs.Fingerprint(st.Current.Cert))
			if p.forced {
				d.forced(mc, from, since, timeout, p)
			}
		}
	case actionDeleteLeftover:
		st, failed = d.store.DeleteLeftover(ctx, st)
	}
	acted := failed == nil && p.action != actionNone
	if failed != nil {
		if ctx.Err() == nil {
			d.log.Error(failed, "root rotation step failed; retrying")
		}
	} else if p.action != actionNone {
		p = planRotationAt(st, want, provider, d.trustReports(), d.published(ctx, st), pc) // what the new state waits for
	}
	if acted && d.OnStep != nil {
		d.OnStep()
	}
	if mc != nil {
		rs := rootRotationStatus(st, want, provider, p.waiting, failed, now)
		if st.Rotation.Phase != certs.PhaseStable {
			rs.status.WaitingForProxies, rs.status.WaitingForProxyCount = p.proxies, int32(p.count)
			if !st.PhaseSince.IsZero() && timeout >= 0 {
				rs.status.PhaseDeadline = &metav1.Time{Time: st.PhaseSince.Add(timeout).Truncate(time.Second)}
			}
		}
		d.writeStatus(ctx, mc, rs, certificateRefs(ctx, d.c, d.namespace, mc))
	}
	return st.Rotation.Phase != certs.PhaseStable
}

// forced reports a phase moved on without every proxy: a log line and a
// Warning Event on MeshConfig naming the proxies.
func (d *RotationDriver) forced(mc *v1alpha1.MeshConfig, phase certs.RotationPhase, since time.Time, timeout time.Duration, p rotationPlan) {
	names := strings.Join(p.proxies, ", ")
	if more := p.count - len(p.proxies); more > 0 {
		names += fmt.Sprintf(" and %d more", more)
	}
	msg := fmt.Sprintf("root rotation phase %s (since %s) moved on to %s after spec.certificates.builtIn.rotationPhaseTimeout (%s) without the ACK of %d proxies, whose streams were closed and which may fail mTLS with their peers until they take the new secrets: %s",
		phase, since.UTC().Format(time.RFC3339), p.next.Phase, timeout, p.count, names)
	d.log.Info("root rotation phase forced on", "from", phase, "to", p.next.Phase, "proxies", p.count, "names", p.proxies)
	if d.Events != nil && mc != nil {
		d.Events.Eventf(mc, nil, corev1.EventTypeWarning, "RootRotationForced", "AdvancePhase", "%.1024s", msg)
	}
}

// phaseTimeout reads spec.certificates.builtIn.rotationPhaseTimeout
// (v1alpha1.DefaultRotationPhaseTimeout when absent or unreadable).
func phaseTimeout(mc *v1alpha1.MeshConfig) time.Duration {
	def, _ := time.ParseDuration(v1alpha1.DefaultRotationPhaseTimeout)
	if mc == nil || mc.Spec.Certificates.BuiltIn == nil || mc.Spec.Certificates.BuiltIn.RotationPhaseTimeout == "" {
		return def
	}
	d, err := time.ParseDuration(string(mc.Spec.Certificates.BuiltIn.RotationPhaseTimeout))
	if err != nil || d < 0 {
		return def
	}
	return d
}

func (d *RotationDriver) writeStatus(ctx context.Context, mc *v1alpha1.MeshConfig, rs rotationStatus, refs metav1.Condition) {
	rs.cond.ObservedGeneration = mc.Generation
	refs.ObservedGeneration = mc.Generation
	next := mc.DeepCopy()
	// Keep phaseSince and the condition's transition time when nothing
	// else changed, so an unchanged status is no write.
	next.Status.RootRotation = &rs.status
	changed := meta.SetStatusCondition(&next.Status.Conditions, rs.cond)
	changed = meta.SetStatusCondition(&next.Status.Conditions, refs) || changed
	if !changed && equality.Semantic.DeepEqual(mc.Status.RootRotation, next.Status.RootRotation) {
		return
	}
	if err := d.c.Status().Update(ctx, next); err != nil && ctx.Err() == nil {
		d.log.V(1).Info("writing MeshConfig status.rootRotation; will retry", "error", err.Error())
	}
}

// rotationRequest reads MeshConfig: the root generation asked for and the
// provider.
func rotationRequest(mc *v1alpha1.MeshConfig) (int64, v1alpha1.CertificateProvider) {
	if mc == nil {
		return 0, v1alpha1.CertificateProviderBuiltIn
	}
	p := mc.Spec.Certificates.Provider
	if p == "" {
		p = v1alpha1.CertificateProviderBuiltIn
	}
	var want int64
	if b := mc.Spec.Certificates.BuiltIn; b != nil {
		want = b.RootGeneration
	}
	return want, p
}

type rotationAction int

const (
	actionNone rotationAction = iota
	actionStart
	actionAdvance
	actionDeleteLeftover
)

// rotationPlan is what the driver does next and what the state waits for.
type rotationPlan struct {
	action  rotationAction
	next    certs.Rotation // for actionAdvance
	waiting string
	// proxies names the first MaxNamedProxies proxies the phase waits for
	// (of count); with forced, the ones it moved on without.
	proxies []string
	count   int
	forced  bool
}

// MaxNamedProxies bounds the proxies a replica's report, MeshConfig's
// status and the forcing Event name: enough to find a pattern (one node,
// one namespace), small enough for a Lease annotation and a status field.
const MaxNamedProxies = 20

// ForceGrace is how long after a phase's deadline the leader waits before
// moving on without the proxies that have not ACKed: at the deadline every
// replica closes their streams, and a proxy that was merely wedged
// reconnects, is sent the phase's secrets and ACKs within seconds.
const ForceGrace = 30 * time.Second

// replicaFacts is one live replica's trust section ("" when its report has
// none: it has not applied a state yet, or its facts lapsed).
type replicaFacts struct{ Replica, Value string }

// trustReports is what the driver knows of the replicas' trust facts.
type trustReports struct {
	// known: the reports have been read (the collector has listed them).
	known bool
	// self is the driver's own replica, whose report must be among facts
	// ("" in tests that leave it out).
	self  string
	facts []replicaFacts // by replica name
}

// planRotation is planRotationAt without a phase deadline.
func planRotation(st builtin.TrustState, want int64, provider v1alpha1.CertificateProvider, reports trustReports, pub publication) rotationPlan {
	return planRotationAt(st, want, provider, reports, pub, phaseClock{timeout: -1})
}

// phaseClock is what a phase's deadline is judged by: now, the phase
// timeout (negative: none) and the grace after it (ForceGrace).
type phaseClock struct {
	now            time.Time
	timeout, grace time.Duration
}

// planRotationAt decides the driver's next action from the persisted
// state, MeshConfig's request and the live replicas' reports, at now, with
// the phase timeout (negative: none). A phase whose proxies have not all
// ACKed it by st.PhaseSince + timeout + grace moves on anyway
// (forced), provided every live replica reported this state: what is
// forced past is proxies, never a replica that has not applied the phase
// nor the weft-root-ca publication. Pure.
func planRotationAt(st builtin.TrustState, want int64, provider v1alpha1.CertificateProvider, reports trustReports, pub publication, pc phaseClock) rotationPlan {
	now, timeout := pc.now, pc.timeout
	rot := st.Rotation
	if rot.Phase == certs.PhaseStable {
		switch {
		case want > st.Generation && provider == v1alpha1.CertificateProviderBuiltIn:
			return rotationPlan{action: actionStart}
		case st.Leftover && st.Next.Cert.Equal(st.Current.Cert):
			return rotationPlan{action: actionDeleteLeftover}
		}
		return rotationPlan{}
	}
	if provider != v1alpha1.CertificateProviderBuiltIn {
		return rotationPlan{waiting: fmt.Sprintf("spec.certificates.provider is %s, so proxies are not given the built-in CA's bundle and the rotation cannot go on: set provider: BuiltIn to finish it", provider)}
	}
	acks, fl := aggregateTrust(reports, st.Key())
	forced := false
	if n, _ := rot.Advance(acks); n.Phase == rot.Phase && timeout >= 0 && !st.PhaseSince.IsZero() &&
		!fl.unknown && fl.replicas > 0 && len(fl.behind) == 0 && !now.Before(st.PhaseSince.Add(timeout+pc.grace)) {
		acks, forced = certs.Acks{TrustNext: true, ServeFromNext: true, DroppedCurrent: true}, true
	}
	if rot.Phase == certs.PhaseAddNewRoot && acks.TrustNext && pub.have < pub.total {
		// Proxies trust the new root for their peers; the control plane's
		// serving certificate moves to it later (RetireOldRoot), and
		// proxies verify it with the published bundle: wait for that too.
		return rotationPlan{waiting: fmt.Sprintf("waiting for the %s ConfigMaps (which workloads verify weft-controller with) to hold the new root: %d of %d namespaces have", dataplane.RootCAConfigMap, pub.have, pub.total)}
	}
	next, waiting := rot.Advance(acks)
	if next.Phase != rot.Phase {
		p := rotationPlan{action: actionAdvance, next: next, forced: forced}
		if forced {
			p.proxies, p.count = fl.waiting, fl.waitingCount
		}
		return p
	}
	w := fl.describe(rot.Phase, waiting)
	if fl.waitingCount > 0 {
		w += "; not yet: " + strings.Join(fl.waiting, ", ")
		if more := fl.waitingCount - len(fl.waiting); more > 0 {
			w += fmt.Sprintf(" and %d more", more)
		}
	}
	if timeout >= 0 && !st.PhaseSince.IsZero() && fl.waitingCount > 0 {
		w += fmt.Sprintf("; at %s (spec.certificates.builtIn.rotationPhaseTimeout %s after the phase began) their streams are closed, and %s later the phase is forced on without them",
			st.PhaseSince.Add(timeout).UTC().Format(time.RFC3339), timeout, pc.grace)
	}
	return rotationPlan{waiting: w, proxies: fl.waiting, count: fl.waitingCount}
}

// fleet sums the live replicas' reports for one state.
type fleet struct {
	unknown                                  bool // the reports have not been read
	replicas, proxies                        int
	trustNext, serveFromNext, droppedCurrent int
	behind                                   []string // replicas that have not applied the state
	// waiting names the first MaxNamedProxies proxies (over every replica,
	// sorted) that have not ACKed what the phase waits for, of
	// waitingCount.
	waiting      []string
	waitingCount int
}

// aggregateTrust combines the live replicas' reports for the trust state
// key: a fact holds when every live replica applied this state and all
// its proxies satisfy it. With no report at all nothing holds, and the
// driver's own replica must be among them (its report is missing only
// when its own publisher cannot write: silence means trouble).
func aggregateTrust(reports trustReports, key string) (certs.Acks, fleet) {
	var fl fleet
	if !reports.known {
		fl.unknown = true
		return certs.Acks{}, fl
	}
	self := reports.self == ""
	for _, rep := range reports.facts {
		fl.replicas++
		self = self || rep.Replica == reports.self
		var r trustReport
		if rep.Value == "" || json.Unmarshal([]byte(rep.Value), &r) != nil || r.State != key {
			fl.behind = append(fl.behind, rep.Replica)
			continue
		}
		fl.proxies += r.Proxies
		fl.trustNext += r.TrustNext
		fl.serveFromNext += r.ServeFromNext
		fl.droppedCurrent += r.DroppedCurrent
		fl.waiting = append(fl.waiting, r.Waiting...)
		fl.waitingCount += r.WaitingCount
	}
	slices.Sort(fl.waiting)
	if len(fl.waiting) > MaxNamedProxies {
		fl.waiting = fl.waiting[:MaxNamedProxies]
	}
	if !self {
		fl.replicas++
		fl.behind = append(fl.behind, reports.self)
	}
	slices.Sort(fl.behind)
	if fl.replicas == 0 || len(fl.behind) > 0 {
		return certs.Acks{}, fl
	}
	return certs.Acks{TrustNext: fl.trustNext == fl.proxies, ServeFromNext: fl.serveFromNext == fl.proxies, DroppedCurrent: fl.droppedCurrent == fl.proxies}, fl
}

// describe says what a phase waits for, with counts.
func (fl fleet) describe(phase certs.RotationPhase, waiting string) string {
	switch {
	case fl.unknown:
		return "waiting to read the controller replicas' reports (Leases labelled " + replicas.LabelKey + "=" + replicas.LabelValue + ")"
	case fl.replicas == 0:
		return "waiting for the controller replicas to report (no live Lease labelled " + replicas.LabelKey + "=" + replicas.LabelValue + ")"
	case len(fl.behind) > 0:
		return fmt.Sprintf("waiting for %d of %d controller replicas to apply phase %s and report it: %s", len(fl.behind), fl.replicas, phase, strings.Join(fl.behind, ", "))
	}
	have := map[certs.RotationPhase]int{certs.PhaseAddNewRoot: fl.trustNext, certs.PhaseSwitchSigning: min(fl.trustNext, fl.serveFromNext), certs.PhaseRetireOldRoot: fl.droppedCurrent}[phase]
	return fmt.Sprintf("%s: %d of %d proxies have (on %d controller replicas)", waiting, have, fl.proxies, fl.replicas)
}

// rotationStatus is MeshConfig's status.rootRotation and RootRotation
// condition for a state.
type rotationStatus struct {
	status v1alpha1.RootRotationStatus
	cond   metav1.Condition
}

// rootRotationStatus describes st for MeshConfig. Pure.
func rootRotationStatus(st builtin.TrustState, want int64, provider v1alpha1.CertificateProvider, waiting string, failed error, now time.Time) rotationStatus {
	rot := st.Rotation
	s := v1alpha1.RootRotationStatus{
		Phase:          string(rot.Phase),
		RootGeneration: st.Generation,
		CurrentRoot:    rootStatus(st.Current),
		WaitingFor:     waiting,
	}
	if !st.PhaseSince.IsZero() {
		s.PhaseSince = &metav1.Time{Time: st.PhaseSince}
	}
	c := metav1.Condition{Type: v1alpha1.ConditionRootRotation, LastTransitionTime: metav1.NewTime(now).Rfc3339Copy()}
	if rot.Phase != certs.PhaseStable {
		s.TargetGeneration = st.NextGeneration
		s.NextRoot = rootStatus(st.Next)
		c.Status, c.Reason = metav1.ConditionFalse, string(rot.Phase)
		c.Message = fmt.Sprintf("rotating the built-in CA's root to generation %d, phase %s: %s", st.NextGeneration, rot.Phase, waiting)
		if provider != v1alpha1.CertificateProviderBuiltIn {
			c.Reason = v1alpha1.ReasonRotationBlocked
			c.Message = waiting
		}
	} else {
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonRootStable
		c.Message = fmt.Sprintf("the root of generation %d (sha256 %s, expires %s) is the only trust anchor and signs every workload certificate",
			st.Generation, s.CurrentRoot.SHA256[:16], st.Current.Cert.NotAfter.UTC().Format(time.RFC3339))
		switch {
		case want > st.Generation && provider != v1alpha1.CertificateProviderBuiltIn:
			c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonRotationBlocked
			c.Message = fmt.Sprintf("spec.certificates.builtIn.rootGeneration asks for root generation %d, but spec.certificates.provider is %s: the built-in root rotates only while it issues workload certificates; set provider: BuiltIn, or rotate the cert-manager issuer's CA instead", want, provider)
		case want > st.Generation:
			c.Status, c.Reason = metav1.ConditionFalse, string(certs.PhaseAddNewRoot)
			c.Message = fmt.Sprintf("starting the rotation to root generation %d", want)
		case want < st.Generation && want > 0:
			c.Message += fmt.Sprintf("; spec.certificates.builtIn.rootGeneration (%d) is below the root's generation: set it to %d to keep this root, or higher to rotate again", want, st.Generation)
		}
		s.WaitingFor = ""
	}
	if failed != nil {
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonRotationBlocked
		c.Message = "the last rotation step failed and is retried: " + failed.Error()
		s.WaitingFor = c.Message
	}
	if len(c.Message) > 1024 {
		c.Message = c.Message[:1021] + "..."
	}
	if len(s.WaitingFor) > 1024 {
		s.WaitingFor = s.WaitingFor[:1021] + "..."
	}
	return rotationStatus{status: s, cond: c}
}

func rootStatus(kp *builtin.KeyPair) *v1alpha1.RootCertificateStatus {
	if kp == nil {
		return nil
	}
	return &v1alpha1.RootCertificateStatus{SHA256: certs.Fingerprint(kp.Cert), NotAfter: metav1.NewTime(kp.Cert.NotAfter).Rfc3339Copy()}
}
