package certs

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// Secret is one identity's current key and certificate chain, ready to be
// served (by SDS, or as a certificate-provider instance). It is immutable;
// a renewal makes a new Secret. Printing it never shows the key.
type Secret struct {
	Identity Identity
	// Chain is leaf first, then intermediates.
	Chain []*x509.Certificate
	// Roots are the issuer's trust anchors for this chain (may be empty,
	// see Issued.Roots).
	Roots []*x509.Certificate
	// ChainPEM is Chain as PEM, leaf first.
	ChainPEM []byte
	// IssuedAt is when the Manager received it; NotAfter is the leaf's
	// expiry; RenewAt is when the Manager starts renewing it.
	IssuedAt, NotAfter, RenewAt time.Time
	// Version increases by one for every new Secret of the Manager, across
	// identities: a cheap xDS resource version.
	Version uint64

	key    crypto.Signer
	keyPEM []byte
}

// PrivateKey is the leaf's key.
func (s *Secret) PrivateKey() crypto.Signer { return s.key }

// PrivateKeyPEM is the leaf's key as PKCS#8 PEM. Handle with care: never log
// it.
func (s *Secret) PrivateKeyPEM() []byte { return s.keyPEM }

// Leaf is Chain[0].
func (s *Secret) Leaf() *x509.Certificate { return s.Chain[0] }

func (s *Secret) String() string {
	return fmt.Sprintf("Secret{%s v%d notAfter=%s key=<redacted>}", s.Identity, s.Version, s.NotAfter.UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing the key.
func (s *Secret) GoString() string { return s.String() }

// Format keeps every verb from reaching the key.
func (s *Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// Event tells a subscriber that an identity's secret changed. Secret is nil
// when the identity has no valid certificate any more: it was released, or
// its certificate expired while renewal kept failing.
type Event struct {
	Identity Identity
	Secret   *Secret
}

// ManagerOptions configure a Manager. Issuer is required; every other zero
// value takes the documented default.
type ManagerOptions struct {
	Issuer Issuer
	// Lifetime asked of the issuer; default 24h.
	Lifetime time.Duration
	// RenewFraction of the lifetime after which a certificate is renewed;
	// default 0.5.
	RenewFraction float64
	// Jitter spreads renewals: each renews at RenewFraction ± Jitter of the
	// lifetime (uniform), so certificates issued together do not all renew
	// together; default 0.05.
	Jitter float64
	// InitialBackoff and MaxBackoff bound the retry delay after a failed
	// issue, doubling each time (±20% jitter); defaults 1s and 5m.
	InitialBackoff, MaxBackoff time.Duration
	// IssueTimeout bounds one call to Issuer.Sign; default 2m.
	IssueTimeout time.Duration
	// MaxConcurrentIssues bounds parallel Sign calls (a cert-manager issuer
	// costs an API round trip and a controller's attention); default 8.
	MaxConcurrentIssues int
	Clock               clock.Clock    // default the real clock
	Rand                func() float64 // in [0,1); default math/rand/v2
	Log                 logr.Logger
	// Observer, when set, learns every issue attempt (for metrics).
	Observer func(provider string, err error)
	// Admit, when set, is asked before every issue and renewal whether id
	// may still have a certificate (the controller checks that its
	// ServiceAccount exists). An error wrapping ErrIdentityGone refuses
	// it: the current certificate is withdrawn at once (an Event with a
	// nil Secret) and the identity is asked again after the retry backoff,
	// in case it comes back. Any other error is a failed issue (retried,
	// the current certificate served until it expires). SetAdmit changes
	// it later.
	Admit func(ctx context.Context, id Identity) error
}

// ErrIdentityGone is what ManagerOptions.Admit wraps when an identity no
// longer exists (its ServiceAccount was deleted): no certificate is
// issued or renewed for it, and the current one is withdrawn.
var ErrIdentityGone = errors.New("the identity no longer exists")

// Manager keeps one key and certificate per identity that has proxies
// connected. Acquire when a proxy of an identity connects, Release when it
// goes; the first Acquire issues, the last Release forgets the key.
//
// Each identity is renewed at about half its lifetime; when the issuer
// fails, the Manager retries with exponential backoff and keeps serving the
// current certificate until it expires. Subscribers learn every change.
// Nothing here runs during translation: the translator names secrets by
// identity, and the xDS layer fills them from Get and the events.
type Manager struct {
	o   ManagerOptions
	sem chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	issuer   Issuer
	admit    func(ctx context.Context, id Identity) error
	entries  map[Identity]*entry
	version  uint64
	subs     map[int]func(Event)
	nextSub  int
	queue    []Event
	queueCnd *sync.Cond
	closed   bool
}

type entry struct {
	id     Identity
	refs   int
	secret *Secret
	kick   chan struct{}
	cancel context.CancelFunc
}

// NewManager starts a Manager; Stop ends it.
func NewManager(o ManagerOptions) (*Manager, error) {
	if o.Issuer == nil {
		return nil, errors.New("certs.NewManager: an Issuer is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.Lifetime, 24*time.Hour)
	def(&o.InitialBackoff, time.Second)
	def(&o.MaxBackoff, 5*time.Minute)
	def(&o.IssueTimeout, 2*time.Minute)
	if o.RenewFraction == 0 {
		o.RenewFraction = 0.5
	}
	if o.Jitter == 0 {
		o.Jitter = 0.05
	}
	if o.RenewFraction-o.Jitter <= 0 || o.RenewFraction+o.Jitter >= 1 {
		return nil, fmt.Errorf("certs.NewManager: renewal at %.2f ± %.2f of the lifetime leaves (0, 1)", o.RenewFraction, o.Jitter)
	}
	if o.MaxConcurrentIssues == 0 {
		o.MaxConcurrentIssues = 8
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	m := &Manager{
		o:       o,
		sem:     make(chan struct{}, o.MaxConcurrentIssues),
		issuer:  o.Issuer,
		admit:   o.Admit,
		entries: map[Identity]*entry{},
		subs:    map[int]func(Event){},
	}
	m.queueCnd = sync.NewCond(&m.mu)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Go(m.dispatch)
	return m, nil
}

// Stop ends every renewal loop and the event dispatcher, and waits for
// them.
func (m *Manager) Stop() {
	m.cancel()
	m.mu.Lock()
	m.closed = true
	m.queueCnd.Broadcast()
	m.mu.Unlock()
	m.wg.Wait()
}

// Subscribe calls fn for every change, in order, from a single goroutine.
// fn must not block for long (hand off to a channel or queue) and must not
// call Subscribe's cancel from inside. Events before Subscribe are not
// replayed: subscribe first, then read current state with Get.
func (m *Manager) Subscribe(fn func(Event)) (cancel func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = fn
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, id)
	}
}

// Acquire records one more proxy of id. The first one starts issuing at
// once; the secret arrives by event.
func (m *Manager) Acquire(id Identity) error {
	if err := id.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("certificate manager stopped")
	}
	if e := m.entries[id]; e != nil {
		e.refs++
		return nil
	}
	ctx, cancel := context.WithCancel(m.ctx)
	e := &entry{id: id, refs: 1, kick: make(chan struct{}, 1), cancel: cancel}
	m.entries[id] = e
	m.wg.Go(func() { m.loop(ctx, e) })
	return nil
}

// Release records one proxy of id fewer. The last one stops renewal, drops
// the key and sends an Event with a nil Secret.
func (m *Manager) Release(id Identity) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return
	}
	if e.refs--; e.refs > 0 {
		return
	}
	e.cancel()
	delete(m.entries, id)
	if e.secret != nil {
		m.enqueueLocked(Event{Identity: id})
	}
}

// Get returns id's current secret, if it has a valid one.
func (m *Manager) Get(id Identity) (*Secret, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[id]; e != nil && e.secret != nil {
		return e.secret, true
	}
	return nil, false
}

// Secrets lists every current secret (for metrics, and for the rotation
// predicate "every leaf chains to the new root").
func (m *Manager) Secrets() []*Secret {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Secret
	for _, e := range m.entries {
		if e.secret != nil {
			out = append(out, e.secret)
		}
	}
	return out
}

// SetIssuer switches the issuer for every issue from now on (root rotation's
// SwitchSigning, or a MeshConfig provider change). Existing certificates
// stay until RenewAll or their normal renewal.
func (m *Manager) SetIssuer(iss Issuer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.issuer = iss
}

// SetAdmit replaces ManagerOptions.Admit for every issue from now on.
func (m *Manager) SetAdmit(admit func(ctx context.Context, id Identity) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.admit = admit
}

// RenewAll re-issues every identity now, e.g. after SetIssuer during a root
// rotation. Each keeps serving its current certificate until the new one
// arrives.
func (m *Manager) RenewAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

// loop issues and renews one identity until its context ends.
func (m *Manager) loop(ctx context.Context, e *entry) {
	log := m.o.Log.WithValues("identity", e.id.String())
	backoff := m.o.InitialBackoff
	for {
		s, err := m.issue(ctx, e.id)
		if ctx.Err() != nil {
			return
		}
		now := m.o.Clock.Now()
		var wait time.Duration
		if err == nil {
			m.publish(e, s)
			backoff = m.o.InitialBackoff
			wait = s.RenewAt.Sub(now)
			log.V(1).Info("certificate issued", "notAfter", s.NotAfter, "renewAt", s.RenewAt)
		} else {
			wait = jittered(backoff, 0.2, m.o.Rand())
			backoff = min(2*backoff, m.o.MaxBackoff)
			cur := m.current(e)
			if cur != nil {
				if errors.Is(err, ErrIdentityGone) {
					// Not renewed, and not served any longer either.
					m.publish(e, nil)
					cur = nil
				} else if left := cur.NotAfter.Sub(now); left <= 0 {
					m.publish(e, nil)
					cur = nil
				} else if left < wait {
					// Wake at expiry to withdraw the certificate, and retry then.
					wait = left
				}
			}
			log.Error(err, "issuing a workload certificate failed; retrying", "retryIn", wait, "servingUntil", notAfter(cur))
		}
		t := m.o.Clock.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-e.kick:
			t.Stop()
		case <-t.C():
		}
	}
}

func notAfter(s *Secret) any {
	if s == nil {
		return "nothing (no valid certificate)"
	}
	return s.NotAfter
}

// issue makes a key and a CSR, asks the issuer, and checks the answer.
func (m *Manager) issue(ctx context.Context, id Identity) (*Secret, error) {
	select {
	case m.sem <- struct{}{}:
		defer func() { <-m.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	iss, admit := m.issuer, m.admit
	m.mu.Unlock()
	if admit != nil {
		if err := admit(ctx, id); err != nil {
			return nil, fmt.Errorf("not issuing a certificate for %s: %w", id, err)
		}
	}
	s, err := m.issueWith(ctx, iss, id)
	if m.o.Observer != nil && ctx.Err() == nil {
		m.o.Observer(iss.Name(), err)
	}
	return s, err
}

func (m *Manager) issueWith(ctx context.Context, iss Issuer, id Identity) (*Secret, error) {
	key, err := NewWorkloadKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(id, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.o.IssueTimeout)
	defer cancel()
	issued, err := iss.Sign(ctx, SignRequest{Identity: id, CSR: csr, Lifetime: m.o.Lifetime})
	if err != nil {
		return nil, fmt.Errorf("%s issuer: %w", iss.Name(), err)
	}
	now := m.o.Clock.Now()
	if err := issued.Verify(id, key.Public(), issued.Roots, now); err != nil {
		return nil, fmt.Errorf("%s issuer returned an unusable certificate: %w", iss.Name(), err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	leaf := issued.Leaf()
	// Renew relative to when we got it (NotBefore is backdated for skew).
	life := leaf.NotAfter.Sub(now)
	frac := m.o.RenewFraction + m.o.Jitter*(2*m.o.Rand()-1)
	return &Secret{
		Identity: id,
		Chain:    issued.Chain,
		Roots:    issued.Roots,
		ChainPEM: issued.ChainPEM(),
		IssuedAt: now,
		NotAfter: leaf.NotAfter,
		RenewAt:  now.Add(time.Duration(float64(life) * frac)),
		key:      key,
		keyPEM:   keyPEM,
	}, nil
}

func (m *Manager) current(e *entry) *Secret {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.secret
}

// publish stores s (nil: withdraw) as e's secret and queues the event,
// unless e was released meanwhile. Storing and queueing under one lock keeps
// events in the order of the changes.
func (m *Manager) publish(e *entry, s *Secret) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[e.id] != e {
		return
	}
	if s != nil {
		m.version++
		s.Version = m.version
	}
	e.secret = s
	m.enqueueLocked(Event{Identity: e.id, Secret: s})
}

func (m *Manager) enqueueLocked(ev Event) {
	m.queue = append(m.queue, ev)
	m.queueCnd.Signal()
}

// dispatch delivers queued events to subscribers, one at a time, outside
// the lock.
func (m *Manager) dispatch() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		for len(m.queue) == 0 && !m.closed {
			m.queueCnd.Wait()
		}
		if m.closed {
			return
		}
		batch := m.queue
		m.queue = nil
		subs := make([]func(Event), 0, len(m.subs))
		for i := 0; i < m.nextSub; i++ {
			if fn, ok := m.subs[i]; ok {
				subs = append(subs, fn)
			}
		}
		m.mu.Unlock()
		for _, ev := range batch {
			for _, fn := range subs {
				fn(ev)
			}
		}
		m.mu.Lock()
	}
}

// jittered is d scaled by a factor uniform in [1-f, 1+f].
func jittered(d time.Duration, f, r float64) time.Duration {
	return time.Duration(float64(d) * (1 + f*(2*r-1)))
}
