package trust

import (
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/xds"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustRoot(t *testing.T, at time.Time) *builtin.KeyPair {
	t.Helper()
	kp, err := builtin.NewRoot("cluster.local", at, builtin.DefaultRootLifetime)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// states builds the trust state of every phase of one rotation.
func states(t *testing.T) (old, nw *builtin.KeyPair, byPhase map[certs.RotationPhase]builtin.TrustState) {
	old, nw = mustRoot(t, t0), mustRoot(t, t0.Add(time.Hour))
	byPhase = map[certs.RotationPhase]builtin.TrustState{
		certs.PhaseStable: {Rotation: certs.NewRotation(old.Cert), Current: old},
	}
	for _, p := range []certs.RotationPhase{certs.PhaseAddNewRoot, certs.PhaseSwitchSigning, certs.PhaseRetireOldRoot} {
		byPhase[p] = builtin.TrustState{Rotation: certs.Rotation{Phase: p, Current: old.Cert, Next: nw.Cert}, Current: old, Next: nw, Generation: 0, NextGeneration: 1, PhaseSince: t0}
	}
	return old, nw, byPhase
}

func report(t *testing.T, replica, state string, proxies, trustNext, serve, dropped int) replicaFacts {
	t.Helper()
	b, err := json.Marshal(trustReport{State: state, Proxies: proxies, TrustNext: trustNext, ServeFromNext: serve, DroppedCurrent: dropped})
	if err != nil {
		t.Fatal(err)
	}
	return replicaFacts{Replica: replica, Value: string(b)}
}

// read is what the driver knows when the reports have been read: facts,
// with replica a as the driver's own.
func read(facts ...replicaFacts) trustReports {
	return trustReports{known: true, self: "a", facts: facts}
}

func TestAggregateTrust(t *testing.T) {
	const key = "AddNewRoot/a/b"
	for _, tc := range []struct {
		name    string
		reports trustReports
		want    certs.Acks
		behind  []string
		proxies int
	}{
		{"the reports have not been read: nothing holds", trustReports{self: "a", facts: []replicaFacts{report(t, "a", key, 1, 1, 1, 1)}}, certs.Acks{}, nil, 0},
		{"no replica reported: nothing holds", trustReports{known: true}, certs.Acks{}, nil, 0},
		{"one replica, all its proxies trust the new root",
			read(report(t, "a", key, 3, 3, 1, 0)), certs.Acks{TrustNext: true}, nil, 3},
		{"two replicas, one proxy behind on the second",
			read(report(t, "a", key, 3, 3, 0, 0), report(t, "b", key, 2, 1, 0, 0)), certs.Acks{}, nil, 5},
		{"a replica has not applied the state yet",
			read(report(t, "a", key, 3, 3, 3, 3), report(t, "b", "Stable/a", 0, 0, 0, 0)), certs.Acks{}, []string{"b"}, 3},
		{"a replica whose report has no trust section (never set, or lapsed) is behind",
			read(report(t, "a", key, 1, 1, 1, 1), replicaFacts{Replica: "c"}), certs.Acks{}, []string{"c"}, 1},
		{"the driver's own replica has no live report: it is behind, whatever the others say",
			read(report(t, "b", key, 1, 1, 1, 1)), certs.Acks{}, []string{"a"}, 1},
		{"a replica without proxies agrees",
			read(report(t, "a", key, 0, 0, 0, 0)), certs.Acks{TrustNext: true, ServeFromNext: true, DroppedCurrent: true}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acks, fl := aggregateTrust(tc.reports, key)
			if acks != tc.want {
				t.Errorf("acks = %+v, want %+v", acks, tc.want)
			}
			if strings.Join(fl.behind, ",") != strings.Join(tc.behind, ",") || fl.proxies != tc.proxies {
				t.Errorf("fleet = %+v, want behind %v and %d proxies", fl, tc.behind, tc.proxies)
			}
		})
	}
}

func TestPlanRotation(t *testing.T) {
	_, nw, st := states(t)
	all := func(p certs.RotationPhase) trustReports {
		return read(report(t, "a", st[p].Key(), 2, 2, 2, 2))
	}
	onlyTrust := func(p certs.RotationPhase) trustReports {
		return read(report(t, "a", st[p].Key(), 2, 2, 1, 0))
	}
	leftoverEnd := builtin.TrustState{Rotation: certs.NewRotation(nw.Cert), Current: nw, Next: nw, Leftover: true, Generation: 1, NextGeneration: 1}
	for _, tc := range []struct {
		name     string
		st       builtin.TrustState
		want     int64
		provider v1alpha1.CertificateProvider
		reports  trustReports
		action   rotationAction
		next     certs.RotationPhase
		waiting  string
		pub      publication
	}{
		{"stable, nothing asked", st[certs.PhaseStable], 0, v1alpha1.CertificateProviderBuiltIn, trustReports{}, actionNone, "", "", publication{}},
		{"stable, a rotation asked", st[certs.PhaseStable], 1, v1alpha1.CertificateProviderBuiltIn, trustReports{}, actionStart, "", "", publication{}},
		{"stable, asked while cert-manager issues: no start", st[certs.PhaseStable], 1, v1alpha1.CertificateProviderCertManager, trustReports{}, actionNone, "", "", publication{}},
		{"stable, an ended rotation's Secret left over", leftoverEnd, 1, v1alpha1.CertificateProviderBuiltIn, trustReports{}, actionDeleteLeftover, "", "", publication{}},
		{"AddNewRoot, every proxy trusts the new root", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, onlyTrust(certs.PhaseAddNewRoot), actionAdvance, certs.PhaseSwitchSigning, "", publication{}},
		{"AddNewRoot, proxies trust the new root, a weft-root-ca ConfigMap does not yet", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, onlyTrust(certs.PhaseAddNewRoot), actionNone, "",
			"waiting for the weft-root-ca ConfigMaps (which workloads verify weft-controller with) to hold the new root: 2 of 3 namespaces have", publication{have: 2, total: 3}},
		{"AddNewRoot, proxies and ConfigMaps have the new root", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, onlyTrust(certs.PhaseAddNewRoot), actionAdvance, certs.PhaseSwitchSigning, "", publication{have: 3, total: 3}},
		{"AddNewRoot, a proxy has not ACKed", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn,
			read(report(t, "a", st[certs.PhaseAddNewRoot].Key(), 2, 1, 0, 0)), actionNone, "", "a trust bundle with the new root: 1 of 2 proxies have (on 1 controller replicas)", publication{}},
		{"AddNewRoot, the replica reports an older state", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, all(certs.PhaseStable), actionNone, "", "waiting for 1 of 1 controller replicas to apply phase AddNewRoot and report it: a", publication{}},
		{"SwitchSigning, one proxy still serves the old root", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderBuiltIn, onlyTrust(certs.PhaseSwitchSigning), actionNone, "", "serve a certificate issued from the new root: 1 of 2 proxies have", publication{}},
		{"SwitchSigning, all serve from the new root", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderBuiltIn, all(certs.PhaseSwitchSigning), actionAdvance, certs.PhaseRetireOldRoot, "", publication{}},
		{"RetireOldRoot, a bundle still has the old root", st[certs.PhaseRetireOldRoot], 1, v1alpha1.CertificateProviderBuiltIn, onlyTrust(certs.PhaseRetireOldRoot), actionNone, "", "without the old root: 0 of 2 proxies have", publication{}},
		{"RetireOldRoot, all dropped it", st[certs.PhaseRetireOldRoot], 1, v1alpha1.CertificateProviderBuiltIn, all(certs.PhaseRetireOldRoot), actionAdvance, certs.PhaseStable, "", publication{}},
		{"in a rotation, the provider switched to cert-manager", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderCertManager, all(certs.PhaseSwitchSigning), actionNone, "", "set provider: BuiltIn to finish it", publication{}},
		{"no replica reports", st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, trustReports{known: true}, actionNone, "", "no live Lease labelled weft.dev/report=replica", publication{}},
		{"the reports have not been read", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderBuiltIn, trustReports{}, actionNone, "", "waiting to read the controller replicas' reports", publication{}},
		{"every proxy on b serves from the new root, but the driver's own report is not live", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderBuiltIn,
			read(report(t, "b", st[certs.PhaseSwitchSigning].Key(), 2, 2, 2, 2)), actionNone, "", "waiting for 1 of 2 controller replicas to apply phase SwitchSigning and report it: a", publication{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planRotation(tc.st, tc.want, tc.provider, tc.reports, tc.pub)
			if p.action != tc.action {
				t.Fatalf("action %d, want %d (waiting %q)", p.action, tc.action, p.waiting)
			}
			if tc.action == actionAdvance && p.next.Phase != tc.next {
				t.Errorf("advances to %s, want %s", p.next.Phase, tc.next)
			}
			if !strings.Contains(p.waiting, tc.waiting) {
				t.Errorf("waiting %q, want it to contain %q", p.waiting, tc.waiting)
			}
		})
	}
	if p := planRotation(st[certs.PhaseRetireOldRoot], 1, v1alpha1.CertificateProviderBuiltIn, all(certs.PhaseRetireOldRoot), publication{}); !p.next.Current.Equal(nw.Cert) {
		t.Error("the rotation does not end with the new root current")
	}
}

func TestRootRotationStatus(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0.Add(5 * time.Minute))
	old, nw, st := states(t)
	for _, tc := range []struct {
		name     string
		st       builtin.TrustState
		want     int64
		provider v1alpha1.CertificateProvider
		waiting  string
		cond     metav1.ConditionStatus
		reason   string
		message  string
	}{
		{"stable", st[certs.PhaseStable], 0, v1alpha1.CertificateProviderBuiltIn, "", metav1.ConditionTrue, "Stable", "is the only trust anchor"},
		{"stable, asked below the root", builtin.TrustState{Rotation: certs.NewRotation(old.Cert), Current: old, Generation: 3}, 1, v1alpha1.CertificateProviderBuiltIn, "", metav1.ConditionTrue, "Stable", "spec.certificates.builtIn.rootGeneration (1) is below the root's generation: set it to 3"},
		{"stable, asked with cert-manager", st[certs.PhaseStable], 1, v1alpha1.CertificateProviderCertManager, "", metav1.ConditionFalse, "RotationBlocked", "spec.certificates.provider is CertManager"},
		{"rotating", st[certs.PhaseSwitchSigning], 1, v1alpha1.CertificateProviderBuiltIn, "waiting for X: 1 of 2 proxies have", metav1.ConditionFalse, "SwitchSigning", "phase SwitchSigning: waiting for X: 1 of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := rootRotationStatus(tc.st, tc.want, tc.provider, tc.waiting, nil, clk.Now())
			c := rs.cond
			if c.Type != v1alpha1.ConditionRootRotation || c.Status != tc.cond || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) {
				t.Errorf("condition %+v, want %s %s containing %q", c, tc.cond, tc.reason, tc.message)
			}
			if !c.LastTransitionTime.Time.Equal(clk.Now()) {
				t.Errorf("lastTransitionTime %s, want the clock's %s", c.LastTransitionTime, clk.Now())
			}
			s := rs.status
			if s.Phase != string(tc.st.Rotation.Phase) || s.CurrentRoot.SHA256 != certs.Fingerprint(tc.st.Current.Cert) {
				t.Errorf("status %+v", s)
			}
			if tc.st.Rotation.Phase == certs.PhaseStable {
				if s.NextRoot != nil || s.WaitingFor != "" || s.TargetGeneration != 0 {
					t.Errorf("stable status says %+v", s)
				}
			} else if s.NextRoot.SHA256 != certs.Fingerprint(nw.Cert) || s.TargetGeneration != 1 || s.WaitingFor != tc.waiting || !s.PhaseSince.Time.Equal(t0) {
				t.Errorf("rotating status %+v", s)
			}
		})
	}
	failed := rootRotationStatus(st[certs.PhaseAddNewRoot], 1, v1alpha1.CertificateProviderBuiltIn, "", errTest("conflict"), clk.Now())
	if failed.cond.Reason != v1alpha1.ReasonRotationBlocked || !strings.Contains(failed.status.WaitingFor, "failed and is retried: conflict") {
		t.Errorf("a failed step shows %+v / %q", failed.cond, failed.status.WaitingFor)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

// TestTrustPredicates: what each of certs.Acks' conditions says about one
// proxy's held secrets, from real certificates.
func TestTrustPredicates(t *testing.T) {
	old, nw, _ := states(t)
	rot := certs.Rotation{Phase: certs.PhaseSwitchSigning, Current: old.Cert, Next: nw.Cert}
	chainFrom := func(root *builtin.KeyPair) []byte {
		inter, err := builtin.NewIntermediate(root, t0.Add(2*time.Hour), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := certs.NewWorkloadKey()
		leaf, err := builtin.SignLeaf(inter, certs.Identity{TrustDomain: "cluster.local", Namespace: "a", ServiceAccount: "b"}, key.Public(), t0.Add(2*time.Hour), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return certs.EncodeCertificatesPEM([]*x509.Certificate{leaf, inter.Cert})
	}
	bundle := func(roots ...*builtin.KeyPair) []byte {
		var cs []*x509.Certificate
		for _, r := range roots {
			cs = append(cs, r.Cert)
		}
		return certs.EncodeCertificatesPEM(cs)
	}
	memo := map[[32]byte]bool{}
	preds := trustPredicates(rot, memo)
	for _, tc := range []struct {
		name string
		held xds.HeldSecrets
		want [3]bool // TrustNext, ServeFromNext, DroppedCurrent
	}{
		{"nothing held", xds.HeldSecrets{}, [3]bool{true, true, true}},
		{"old root only", xds.HeldSecrets{Chain: chainFrom(old), Bundle: bundle(old)}, [3]bool{false, false, false}},
		{"both roots, old certificate", xds.HeldSecrets{Chain: chainFrom(old), Bundle: bundle(old, nw)}, [3]bool{true, false, false}},
		{"both roots, new certificate", xds.HeldSecrets{Chain: chainFrom(nw), Bundle: bundle(old, nw)}, [3]bool{true, true, false}},
		{"new root only", xds.HeldSecrets{Chain: chainFrom(nw), Bundle: bundle(nw)}, [3]bool{true, true, true}},
		{"garbage", xds.HeldSecrets{Chain: []byte("x"), Bundle: []byte("y")}, [3]bool{false, false, true}},
	} {
		for i, p := range preds {
			for range 2 { // the second time from the memo
				if got := p(tc.held); got != tc.want[i] {
					t.Errorf("%s: predicate %d = %v, want %v", tc.name, i, got, tc.want[i])
				}
			}
		}
	}
	if len(memo) == 0 {
		t.Error("nothing remembered")
	}
}

// TestPlanRotationPhaseTimeout (issue 13, item 3): a phase waits for its
// proxies, naming them, until phaseSince + rotationPhaseTimeout + grace;
// then it moves on without them (forced, naming them), but never past a
// replica that has not applied the phase nor past the weft-root-ca
// publication, which are the control plane's own to finish.
func TestPlanRotationPhaseTimeout(t *testing.T) {
	_, _, st := states(t)
	add := st[certs.PhaseAddNewRoot]
	stuck := func(names ...string) trustReports {
		b, _ := json.Marshal(trustReport{State: add.Key(), Proxies: 3, TrustNext: 3 - len(names), Waiting: names, WaitingCount: len(names)})
		b2, _ := json.Marshal(trustReport{State: add.Key(), Proxies: 25, TrustNext: 0, Waiting: []string{"z-0.shop"}, WaitingCount: 25})
		return read(replicaFacts{Replica: "a", Value: string(b)}, replicaFacts{Replica: "b", Value: string(b2)})
	}
	pc := func(after time.Duration) phaseClock {
		return phaseClock{now: add.PhaseSince.Add(after), timeout: time.Hour, grace: 30 * time.Second}
	}

	p := planRotationAt(add, 1, v1alpha1.CertificateProviderBuiltIn, stuck("stuck-0.shop", "a-1.other"), publication{}, pc(time.Hour))
	if p.action != actionNone || p.count != 27 || strings.Join(p.proxies, " ") != "a-1.other stuck-0.shop z-0.shop" {
		t.Fatalf("at the deadline: action %d, %d proxies %v; want waiting (for the grace), naming them over both replicas, sorted", p.action, p.count, p.proxies)
	}
	for _, want := range []string{"not yet: a-1.other, stuck-0.shop, z-0.shop and 24 more", "at 2026-03-01T13:00:00Z (spec.certificates.builtIn.rotationPhaseTimeout 1h0m0s after the phase began) their streams are closed, and 30s later the phase is forced on without them"} {
		if !strings.Contains(p.waiting, want) {
			t.Errorf("waiting %q does not say %q", p.waiting, want)
		}
	}

	p = planRotationAt(add, 1, v1alpha1.CertificateProviderBuiltIn, stuck("stuck-0.shop"), publication{}, pc(time.Hour+30*time.Second))
	if p.action != actionAdvance || p.next.Phase != certs.PhaseSwitchSigning || !p.forced || p.count != 26 || p.proxies[0] != "stuck-0.shop" {
		t.Fatalf("after the deadline and grace: %+v; want forced on to SwitchSigning naming the proxies", p)
	}

	// Not past a replica that has not applied the phase.
	behind := read(report(t, "a", add.Key(), 1, 0, 0, 0), report(t, "b", st[certs.PhaseStable].Key(), 1, 1, 1, 1))
	if p := planRotationAt(add, 1, v1alpha1.CertificateProviderBuiltIn, behind, publication{}, pc(48*time.Hour)); p.action != actionNone {
		t.Fatalf("forced past a replica behind: %+v", p)
	}
	// Not past the weft-root-ca publication.
	if p := planRotationAt(add, 1, v1alpha1.CertificateProviderBuiltIn, stuck("stuck-0.shop"), publication{have: 1, total: 2}, pc(48*time.Hour)); p.action != actionNone || !strings.Contains(p.waiting, "ConfigMaps") {
		t.Fatalf("forced past the ConfigMaps: %+v", p)
	}
	// A timeout of 0s forces a stuck phase on after the grace alone.
	zero := phaseClock{now: add.PhaseSince.Add(30 * time.Second), timeout: 0, grace: 30 * time.Second}
	if p := planRotationAt(add, 1, v1alpha1.CertificateProviderBuiltIn, stuck("stuck-0.shop"), publication{}, zero); p.action != actionAdvance || !p.forced {
		t.Fatalf("timeout 0s: %+v", p)
	}
	// The other phases force on the same way.
	for _, ph := range []certs.RotationPhase{certs.PhaseSwitchSigning, certs.PhaseRetireOldRoot} {
		r := read(report(t, "a", st[ph].Key(), 2, 1, 1, 1))
		if p := planRotationAt(st[ph], 1, v1alpha1.CertificateProviderBuiltIn, r, publication{}, pc(2*time.Hour)); p.action != actionAdvance || !p.forced {
			t.Fatalf("%s after its deadline: %+v", ph, p)
		}
	}
}

func TestPhaseMissing(t *testing.T) {
	m := [][]string{{"a", "c"}, {"b", "c"}, {"d"}}
	for ph, want := range map[certs.RotationPhase]string{certs.PhaseAddNewRoot: "a c", certs.PhaseSwitchSigning: "a b c", certs.PhaseRetireOldRoot: "d"} {
		if got := strings.Join(phaseMissing(ph, m), " "); got != want {
			t.Errorf("%s: %q, want %q", ph, got, want)
		}
	}
}
