package trust

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/certs/certmanager"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/controller/replicas"
	"github.com/weftmesh/weft/xds"
)

// Follower runs on every replica. It applies the built-in CA's
// persisted trust state (builtin.TrustState, which the leader's
// RotationDriver moves on): the bundle proxies are given is the state's
// Rotation.Bundle(), workload certificates are signed under
// Rotation.Signing() (all re-issued when that changes), and the xDS
// server's own certificate follows. It also follows MeshConfig's choice of
// provider, and reports, for the state it applied, how many of its proxies
// hold what the rotation waits for (the section "trust" of this replica's
// report Lease).
type Follower struct {
	ads       *xds.ADS
	m         *certs.Manager
	src       *secretSource
	store     *builtin.RootStore
	c         client.WithWatch
	facts     *replicas.Section
	serving   *ServingCert
	dnsNames  []string
	namespace string
	log       logr.Logger
	// rotatingPoll is how often the proxies' ACKs are counted during a
	// rotation (default 500ms); idlePoll how often the state and MeshConfig
	// are re-read otherwise (default 10s; Secret changes wake it at once).
	rotatingPoll, idlePoll time.Duration

	// Only the follower's goroutine touches these.
	state       builtin.TrustState
	applied     bool
	issuers     map[string]*builtin.Issuer // by root fingerprint
	issuerKey   string                     // the workload issuer in use: provider and root or issuerRef
	provider    string                     // its provider: providerBuiltIn or providerCertManager
	servingRoot string
	anchors     []*x509.Certificate // the pinned cert-manager CAs in use
	pinnedErr   string              // the last trust bundle error logged
	nextServing time.Time
	checked     map[[32]byte]bool // predicate results by content, for the applied state
	// timeout is MeshConfig's rotation phase timeout as last read; closed
	// the state whose timed-out proxies' streams were closed.
	timeout time.Duration
	closed  string

	mu     sync.Mutex // guards phase for metrics
	phase  certs.RotationPhase
	metric []*x509.Certificate
}

// trustReport is one replica's facts for the trust state it applied: how
// many of its proxies (served secrets) satisfy each of certs.Acks'
// conditions.
type trustReport struct {
	// State is the applied builtin.TrustState.Key(); empty before the
	// first.
	State          string `json:"state"`
	Proxies        int    `json:"proxies"`
	TrustNext      int    `json:"trustNext"`
	ServeFromNext  int    `json:"serveFromNext"`
	DroppedCurrent int    `json:"droppedCurrent"`
	// Waiting names the first MaxNamedProxies of this replica's proxies
	// (node ids, sorted) that have not ACKed what the phase waits for, of
	// WaitingCount.
	Waiting      []string `json:"waiting,omitempty"`
	WaitingCount int      `json:"waitingCount,omitempty"`
}

// run follows until ctx ends, then stops the Manager.
func (f *Follower) Run(ctx context.Context) error {
	defer f.m.Stop()
	if f.rotatingPoll == 0 {
		f.rotatingPoll = 500 * time.Millisecond
	}
	if f.idlePoll == 0 {
		f.idlePoll = 10 * time.Second
	}
	f.issuers = map[string]*builtin.Issuer{}
	// Tell the leader this replica exists before it serves any secret, so
	// that no rotation step is taken without its facts: the empty report
	// ("applied no state") must be in the Lease before the first state is
	// applied — until then the Manager has no issuer and the bundle is
	// empty, so nothing is served. A replica that cannot write its report
	// serves no secret (the publisher logs why).
	f.report()
	if err := f.facts.Written(ctx); err != nil {
		return nil // ctx ended
	}
	wake := make(chan struct{}, 1)
	go watchWake(ctx, f.c, &corev1.SecretList{}, []client.ListOption{client.InNamespace(f.namespace), client.MatchingLabels{"app.kubernetes.io/component": "ca"}}, wake, f.log)
	for {
		// Re-read the state when a Secret changed or every idlePoll; in
		// between, during a rotation, only count the proxies' ACKs.
		f.sync(ctx)
		reread := time.Now().Add(f.idlePoll)
	count:
		for {
			wait := time.Until(reread)
			if f.applied && f.state.Rotation.Phase != certs.PhaseStable {
				wait = min(wait, f.rotatingPoll)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
				break count
			case <-time.After(max(wait, 0)):
				if !time.Now().Before(reread) {
					break count
				}
				f.report()
			}
		}
	}
}

func (f *Follower) sync(ctx context.Context) {
	st, err := f.store.LoadTrust(ctx)
	changed := false
	switch {
	case err == nil:
		changed = !f.applied || st.Key() != f.state.Key()
		f.state, f.applied = st, true
	case errors.Is(err, builtin.ErrRootNotFound), errors.Is(err, builtin.ErrInconsistent):
		// The leader creates the root; a rotation step is half written.
	default:
		f.log.Error(err, "loading the mesh root CA; keeping the current trust state")
	}
	if !f.applied {
		f.report()
		return
	}
	mc := readMeshConfig(ctx, f.c)
	f.timeout = phaseTimeout(mc)
	var pinned trustAnchors
	if provider, _ := workloadIssuer(mc); provider == providerCertManager {
		pinned = readTrustBundle(ctx, f.c, f.namespace, mc.Spec.Certificates.CertManager.TrustBundle)
	}
	f.reconcile(mc, pinned, changed)
	f.report()
}

// reconcile serves the applied trust state with the provider MeshConfig
// selects. The bundle is set before the issuer changes, so that proxies
// are given a root before certificates from it are: no rotation phase
// changes both anyway (AddNewRoot adds to the bundle, SwitchSigning
// changes the signer, RetireOldRoot removes from the bundle).
//
// With cert-manager, pinned is MeshConfig's
// spec.certificates.certManager.trustBundle as read now: the issuer is
// made with it (a change re-issues every certificate), and it is the
// bundle's base. If it cannot be read, the issuer in use stays (and with
// it the anchors last read), and the error is logged naming the field.
func (f *Follower) reconcile(mc *v1alpha1.MeshConfig, pinned trustAnchors, stateChanged bool) {
	st := f.state
	if stateChanged {
		f.checked = map[[32]byte]bool{}
		for fp := range f.issuers {
			if fp != certs.Fingerprint(st.Current.Cert) && (st.Next == nil || st.Leftover || fp != certs.Fingerprint(st.Next.Cert)) {
				delete(f.issuers, fp)
			}
		}
		f.mu.Lock()
		f.phase, f.metric = st.Rotation.Phase, st.Rotation.Bundle().Roots()
		f.mu.Unlock()
		f.log.Info("trust state", "phase", st.Rotation.Phase, "root", certs.Fingerprint(st.Current.Cert), "signing", certs.Fingerprint(st.Signing().Cert))
	}

	provider, ref := workloadIssuer(mc)
	key := providerCertManager + "/" + ref.Group + "/" + ref.Kind + "/" + ref.Name + "/" + pinned.key()
	if provider == providerBuiltIn {
		key = providerBuiltIn + "/" + certs.Fingerprint(st.Signing().Cert)
	}
	var next certs.Issuer
	if key != f.issuerKey {
		if provider == providerBuiltIn {
			if iss := f.issuer(st.Signing()); iss != nil {
				next = iss
			}
		} else if pinned.err != nil {
			if pinned.err.Error() != f.pinnedErr {
				f.log.Error(pinned.err, "MeshConfig selects cert-manager but its trust bundle cannot be used; keeping the current issuer and trust bundle")
			}
			f.pinnedErr = pinned.err.Error()
		} else if cm, err := certmanager.New(certmanager.Options{Client: f.c, Namespace: f.namespace, IssuerRef: ref, Log: f.log, TrustAnchors: pinned.certs, TrustSource: pinned.source}); err != nil {
			f.log.Error(err, "MeshConfig selects cert-manager but its issuer cannot be used; keeping the current issuer")
		} else {
			next = cm
			f.anchors = pinned.certs
			f.pinnedErr = ""
		}
		if next != nil {
			f.provider = provider
		}
	}
	// The base of the bundle: the built-in CA's roots of this phase, or the
	// CAs MeshConfig pins for cert-manager — never a root an issuer
	// reported (secretSource adds the roots of the certificates it serves,
	// which are these, or the previous provider's until they are
	// re-issued).
	var base []*x509.Certificate
	if f.provider == providerBuiltIn {
		base = st.Rotation.Bundle().Roots()
	} else {
		base = f.anchors
	}
	f.src.setBase(base)
	if next != nil {
		f.m.SetIssuer(next)
		f.m.RenewAll()
		f.issuerKey = key
		f.log.Info("issuing workload certificates", "provider", next.Name(), "issuer", key)
	}

	// The xDS serving certificate moves to the new root only when the old
	// one leaves the bundle: sidecars verify the control plane with the
	// weft-root-ca ConfigMap, which holds both roots from AddNewRoot on
	// (internal/controller/trust publishes the root Secret's ca.crt).
	serving := st.Current
	if st.Rotation.Phase == certs.PhaseRetireOldRoot {
		serving = st.Next
	}
	if certs.Fingerprint(serving.Cert) != f.servingRoot || !time.Now().Before(f.nextServing) {
		f.issueServing(serving)
	}
}

// issuer returns the built-in issuer under kp's root, making it once.
func (f *Follower) issuer(kp *builtin.KeyPair) *builtin.Issuer {
	fp := certs.Fingerprint(kp.Cert)
	if iss := f.issuers[fp]; iss != nil {
		return iss
	}
	iss, err := builtin.NewIssuer(kp, builtin.Options{})
	if err != nil {
		f.log.Error(err, "making an issuer under the mesh root CA", "root", fp)
		return nil
	}
	f.issuers[fp] = iss
	return iss
}

func (f *Follower) issueServing(kp *builtin.KeyPair) {
	f.nextServing = time.Now().Add(10 * time.Second) // retry, unless issued below
	iss := f.issuer(kp)
	if iss == nil {
		return
	}
	cert, err := iss.ServingCertificate(f.dnsNames, servingLifetime)
	if err != nil {
		f.log.Error(err, "issuing the xDS serving certificate")
		return
	}
	f.serving.p.Store(cert)
	f.servingRoot = certs.Fingerprint(kp.Cert)
	f.nextServing = time.Now().Add(servingLifetime / 2)
}

// report counts this replica's proxies for the applied state (nothing
// before the first) and sets the report section. The publisher writes it
// only when it changed (at most four writes a second with the rest of the
// report); setting it also says the facts are current: the follower sets
// it at least every idlePoll, so a follower stuck for longer than the
// report deadline (20 s) drops out of its report and the leader waits for
// it rather than trusting facts nobody checks any more.
func (f *Follower) report() {
	var r trustReport
	if f.applied {
		r.State = f.state.Key()
		if rot := f.state.Rotation; rot.Phase == certs.PhaseStable {
			r.Proxies, _ = f.ads.SecretHolders()
		} else {
			h := f.ads.SecretHoldersNamed(trustPredicates(rot, f.checked)...)
			r.Proxies = h.Proxies
			r.TrustNext, r.ServeFromNext, r.DroppedCurrent = h.Satisfied[0], h.Satisfied[1], h.Satisfied[2]
			waiting := phaseMissing(rot.Phase, h.Missing)
			r.WaitingCount = len(waiting)
			r.Waiting = waiting[:min(len(waiting), MaxNamedProxies)]
			f.closeTimedOut(waiting)
		}
	}
	b, _ := json.Marshal(r)
	f.facts.Set(string(b))
}

// phaseMissing is the proxies that hold up phase, from the node ids
// missing each of trustPredicates' facts: the facts certs.Rotation.Advance
// checks for that phase. Sorted, each id once.
func phaseMissing(phase certs.RotationPhase, missing [][]string) []string {
	var ids []string
	switch phase {
	case certs.PhaseAddNewRoot:
		ids = slices.Clone(missing[0])
	case certs.PhaseSwitchSigning:
		ids = append(slices.Clone(missing[0]), missing[1]...)
	case certs.PhaseRetireOldRoot:
		ids = slices.Clone(missing[2])
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// closeTimedOut ends, once per applied state, the streams of the proxies
// that have not ACKed the phase by its deadline (the state's phase start
// plus MeshConfig's rotationPhaseTimeout): they reconnect and are sent
// the phase's secrets at once. The leader moves the phase on ForceGrace
// later if they still have not ACKed (RotationDriver).
func (f *Follower) closeTimedOut(waiting []string) {
	st := f.state
	if len(waiting) == 0 || st.PhaseSince.IsZero() || f.closed == st.Key() || time.Now().Before(st.PhaseSince.Add(f.timeout)) {
		return
	}
	f.closed = st.Key()
	ids := make(map[string]bool, len(waiting))
	for _, id := range waiting {
		ids[id] = true
	}
	n := f.ads.EndSecretHolders(ids, fmt.Sprintf("root rotation phase %s began at %s and this proxy has not ACKed its secrets within spec.certificates.builtIn.rotationPhaseTimeout (%s): reconnect to be sent them again",
		st.Rotation.Phase, st.PhaseSince.UTC().Format(time.RFC3339), f.timeout))
	f.log.Info("root rotation phase timed out: closed the streams of the proxies that have not ACKed it", "phase", st.Rotation.Phase, "streams", n, "proxies", len(waiting), "names", waiting[:min(len(waiting), MaxNamedProxies)])
}

// trustPredicates are certs.Acks' three conditions on what one proxy
// holds: TrustNext, ServeFromNext, DroppedCurrent. Holding no bundle or no
// certificate satisfies them (see xds.ADS.SecretHolders). Results are
// remembered by content in memo: each certificate chain is verified once
// per state, not at every count.
func trustPredicates(rot certs.Rotation, memo map[[32]byte]bool) []func(xds.HeldSecrets) bool {
	cached := func(kind byte, data []byte, f func([]byte) bool) bool {
		k := sha256.Sum256(append([]byte{kind}, data...))
		if v, ok := memo[k]; ok {
			return v
		}
		v := f(data)
		memo[k] = v
		return v
	}
	contains := func(root *x509.Certificate) func([]byte) bool {
		return func(pem []byte) bool {
			roots, err := certs.ParseCertificatesPEM(pem)
			return err == nil && bundleHas(roots, root)
		}
	}
	chainsTo := func(pem []byte) bool {
		chain, err := certs.ParseCertificatesPEM(pem)
		return err == nil && chain[len(chain)-1].CheckSignatureFrom(rot.Next) == nil
	}
	return []func(xds.HeldSecrets) bool{
		func(h xds.HeldSecrets) bool { return h.Bundle == nil || cached(1, h.Bundle, contains(rot.Next)) },
		func(h xds.HeldSecrets) bool { return h.Chain == nil || cached(2, h.Chain, chainsTo) },
		func(h xds.HeldSecrets) bool { return h.Bundle == nil || !cached(3, h.Bundle, contains(rot.Current)) },
	}
}

func bundleHas(roots []*x509.Certificate, r *x509.Certificate) bool {
	for _, c := range roots {
		if c.Equal(r) {
			return true
		}
	}
	return false
}

// metricsBundle is what the metrics read: the trusted roots and the phase.
func (f *Follower) metricsBundle() ([]*x509.Certificate, certs.RotationPhase) {
	b := f.src.Bundle().Roots()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(b) == 0 {
		b = f.metric
	}
	return b, f.phase
}

// watchWake pokes wake whenever an object of list's kind matching opts
// changes, re-watching after errors, until ctx ends. Callers also poll:
// a watch is a shortcut, not a guarantee.
func watchWake(ctx context.Context, c client.WithWatch, list client.ObjectList, opts []client.ListOption, wake chan<- struct{}, log logr.Logger) {
	for ctx.Err() == nil {
		w, err := c.Watch(ctx, list, opts...)
		if err == nil {
			for range w.ResultChan() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			w.Stop()
		} else {
			log.V(1).Info("watch failed; polling meanwhile", "error", err.Error())
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// Bundle is the trust bundle proxies are given now: the roots that a
// workload certificate presented to the xDS server must chain to.
func (f *Follower) Bundle() certs.Bundle { return f.src.Bundle() }
