// Package webhookserver serves weft's sidecar injector (webhook.Handler) over
// HTTPS on every weft-controller replica, with a serving certificate that
// weft issues itself, and keeps the MutatingWebhookConfiguration's caBundle
// current on the leader.
//
// Certificates, without cert-manager (the default):
//
//   - the webhook CA (ECDSA P-256, 10 years) lives in the kubernetes.io/tls
//     Secret <namespace>/weft-webhook-ca. Whoever needs it first (the leader's
//     CABundle reconciler or any replica's server) creates it; the API
//     server's create is the arbiter and a loser of the race reads the
//     winner's CA, so every replica ends up with the same one;
//   - each replica issues itself a serving certificate for the Service's DNS
//     names (weft-webhook.<namespace>.svc and its longer forms) with a new
//     key, at start and again at half its lifetime (7 days by default), and
//     re-issues at once when the CA in the Secret changes. The TLS listener
//     reads the current certificate through tls.Config.GetCertificate, so a
//     renewal needs no restart;
//   - the leader (CABundle) writes the CA into the caBundle of every webhook
//     of the named MutatingWebhookConfigurations whose clientConfig points at
//     the Service, and rechecks every Resync (an `kubectl apply` or Argo CD
//     sync that empties it is repaired within a minute).
//
// With cert-manager: when a named configuration carries cert-manager's CA
// injector annotation (cert-manager.io/inject-ca-from), cert-manager owns
// the caBundle and the certificate. The leader leaves the caBundle alone and
// every replica serves the certificate in the Secret
// <namespace>/weft-webhook-tls (the Certificate's spec.secretName; see
// config/components/webhook-cert-manager), re-read every Resync.
//
// Not done: rotating the webhook CA itself before its 10 years run out
// (deleting the Secret makes weft create a new CA; webhook calls may fail for
// up to a Resync while the caBundle and the replicas catch up).
package webhookserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/webhook"
)

// Defaults of Options.
const (
	DefaultNamespace             = "weft-system"
	DefaultServiceName           = "weft-webhook"
	DefaultCASecretName          = "weft-webhook-ca"
	DefaultCertManagerSecretName = "weft-webhook-tls"
	DefaultWebhookConfiguration  = "weft-sidecar-injector"
	DefaultCALifetime            = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime          = 7 * 24 * time.Hour
	DefaultResync                = time.Minute

	// CAInjectorAnnotation is cert-manager's CA injector annotation. When a
	// webhook configuration has it, cert-manager owns caBundle and the
	// serving certificate.
	CAInjectorAnnotation = "cert-manager.io/inject-ca-from"
)

// Options configure the webhook server. The zero value of every field but
// Address means its default.
type Options struct {
	// Address is host:port of the HTTPS listener (--webhook-address).
	Address string
	// Namespace holds the Service, the CA Secret and cert-manager's Secret.
	Namespace string
	// ServiceName is the webhook Service; the serving certificate is for
	// its DNS names.
	ServiceName string
	// CASecretName is weft's webhook CA Secret.
	CASecretName string
	// CertManagerSecretName is the Secret that cert-manager's Certificate
	// writes when the configuration asks for cert-manager.
	CertManagerSecretName string
	// WebhookConfigurations are the MutatingWebhookConfigurations whose
	// caBundle the leader keeps current.
	WebhookConfigurations []string
	// Injector are the injector's options; LegacySidecar and NoSleepAction
	// are set from the API server's version at start.
	Injector webhook.Options
	// CALifetime is the lifetime of a CA that weft creates.
	CALifetime time.Duration
	// CertLifetime is the serving certificate's lifetime; it is renewed at
	// half of it.
	CertLifetime time.Duration
	// Resync is how often replicas re-read the Secrets and the leader
	// rechecks caBundle.
	Resync time.Duration
}

func (o *Options) defaults() {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	if o.CASecretName == "" {
		o.CASecretName = DefaultCASecretName
	}
	if o.CertManagerSecretName == "" {
		o.CertManagerSecretName = DefaultCertManagerSecretName
	}
	if len(o.WebhookConfigurations) == 0 {
		o.WebhookConfigurations = []string{DefaultWebhookConfiguration}
	}
	if o.CALifetime == 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.CertLifetime == 0 {
		o.CertLifetime = DefaultCertLifetime
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
}

// DNSNames are the names the serving certificate is for: the API server
// calls a Service-referenced webhook as <service>.<namespace>.svc.
func (o Options) DNSNames() []string {
	o.defaults()
	svc := o.ServiceName + "." + o.Namespace
	return []string{svc + ".svc", svc + ".svc.cluster.local", svc, o.ServiceName}
}

// Server is the HTTPS server of the injection webhook. It runs on every
// replica (it does not need leader election).
type Server struct {
	o      Options
	lis    net.Listener
	mgr    manager.Manager
	direct client.Client // Secrets and webhook configurations, uncached
	log    logr.Logger

	current atomic.Pointer[serving]
	caMu    sync.Mutex // serialises create-or-get of the CA Secret
}

// serving is the certificate being served and when to replace it.
type serving struct {
	cert     *tls.Certificate
	ca       []byte // the CA certificate that signed it (DER); nil from cert-manager
	renewAt  time.Time
	fromCM   bool
	certHash []byte
}

// New binds the listener (so a port in use fails at once) and returns the
// server. Add it and CABundleReconciler() to the manager.
func New(mgr manager.Manager, o Options, log logr.Logger) (*Server, error) {
	o.defaults()
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, err
	}
	return &Server{o: o, lis: lis, mgr: mgr, direct: direct, log: log}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica serves the webhook.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready fails until the server holds a serving certificate.
func (s *Server) Ready() error {
	if s.current.Load() == nil {
		return errors.New("no webhook serving certificate yet")
	}
	return nil
}

// Start serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	go s.certLoop(ctx)

	opts := s.o.Injector
	if dc, err := discovery.NewDiscoveryClientForConfig(s.mgr.GetConfig()); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			opts = webhook.OptionsForVersion(opts, v.Major, v.Minor)
		} else {
			s.log.Error(err, "reading the API server's version; injecting native sidecars")
		}
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, webhook.NewWebhook(webhook.NewHandler(s.mgr.GetClient(), webhook.Scheme, opts).WithLiveReader(s.mgr.GetAPIReader())))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.getCertificate},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(s.lis, "", "") }()
	s.log.Info("serving the injection webhook", "address", s.lis.Addr().String(), "path", webhook.Path, "legacySidecar", opts.LegacySidecar)
	select {
	case err := <-errc:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := s.current.Load()
	if cur == nil {
		return nil, errors.New("weft-controller has no webhook serving certificate yet")
	}
	return cur.cert, nil
}

// certLoop keeps a valid serving certificate, retrying errors with backoff
// while the current certificate stays served.
func (s *Server) certLoop(ctx context.Context) {
	backoff := time.Second
	for {
		wait, err := s.refresh(ctx)
		if err != nil {
			s.log.Error(err, "webhook serving certificate", "retryIn", backoff.String())
			wait, backoff = backoff, min(2*backoff, s.o.Resync)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// refresh makes sure the right certificate is served and returns when to
// look again.
func (s *Server) refresh(ctx context.Context) (time.Duration, error) {
	useCM, err := s.certManagerMode(ctx)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	cur := s.current.Load()
	if useCM {
		sec := &corev1.Secret{}
		key := client.ObjectKey{Namespace: s.o.Namespace, Name: s.o.CertManagerSecretName}
		if err := s.direct.Get(ctx, key, sec); err != nil {
			return 0, fmt.Errorf("the webhook configuration asks for cert-manager (%s), but reading its Secret %s: %w", CAInjectorAnnotation, key, err)
		}
		cert, err := decodeServing(sec)
		if err != nil {
			return 0, err
		}
		if cur == nil || !cur.fromCM || !bytes.Equal(cur.certHash, cert.Certificate[0]) {
			s.current.Store(&serving{cert: cert, fromCM: true, certHash: cert.Certificate[0]})
			s.log.Info("serving the webhook certificate from cert-manager", "secret", key.String(), "notAfter", cert.Leaf.NotAfter)
		}
		return s.o.Resync, nil
	}
	ca, err := s.ensureCA(ctx)
	if err != nil {
		return 0, err
	}
	if cur == nil || cur.fromCM || !bytes.Equal(cur.ca, ca.cert.Raw) || !now.Before(cur.renewAt) {
		cert, err := issueServing(ca, s.o.DNSNames(), now, s.o.CertLifetime)
		if err != nil {
			return 0, err
		}
		life := cert.Leaf.NotAfter.Sub(now)
		cur = &serving{cert: cert, ca: ca.cert.Raw, renewAt: now.Add(life / 2)}
		s.current.Store(cur)
		s.log.Info("issued the webhook serving certificate", "dnsNames", s.o.DNSNames(), "notAfter", cert.Leaf.NotAfter, "renewAt", cur.renewAt)
	}
	return max(min(s.o.Resync, time.Until(cur.renewAt)), 0), nil
}

// certManagerMode reports whether a named webhook configuration carries
// cert-manager's CA injector annotation.
func (s *Server) certManagerMode(ctx context.Context) (bool, error) {
	for _, name := range s.o.WebhookConfigurations {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := s.direct.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return false, fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", name, err)
		}
		if mwc.Annotations[CAInjectorAnnotation] != "" {
			return true, nil
		}
	}
	return false, nil
}

// ensureCA reads the CA Secret, creating it when it does not exist. Create
// is the arbiter between replicas.
func (s *Server) ensureCA(ctx context.Context) (*caKeyPair, error) {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	key := client.ObjectKey{Namespace: s.o.Namespace, Name: s.o.CASecretName}
	sec := &corev1.Secret{}
	err := s.direct.Get(ctx, key, sec)
	if err == nil {
		return decodeCA(sec)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the webhook CA Secret %s: %w", key, err)
	}
	ca, err := newCA(time.Now(), s.o.CALifetime)
	if err != nil {
		return nil, err
	}
	sec, err = caSecret(key.Namespace, key.Name, ca)
	if err != nil {
		return nil, err
	}
	if err := s.direct.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) {
			won := &corev1.Secret{}
			if err := s.direct.Get(ctx, key, won); err != nil {
				return nil, fmt.Errorf("reading the webhook CA Secret %s: %w", key, err)
			}
			return decodeCA(won)
		}
		return nil, fmt.Errorf("creating the webhook CA Secret %s: %w", key, err)
	}
	s.log.Info("created the webhook CA", "secret", key.String(), "notAfter", ca.cert.NotAfter)
	return ca, nil
}

// CABundleReconciler returns the leader's runnable that keeps caBundle
// current.
func (s *Server) CABundleReconciler() manager.Runnable { return &caBundle{s: s} }

type caBundle struct{ s *Server }

// NeedLeaderElection: one writer of the webhook configurations.
func (c *caBundle) NeedLeaderElection() bool { return true }

func (c *caBundle) Start(ctx context.Context) error {
	backoff := time.Second
	for {
		wait := c.s.o.Resync
		missing, err := c.reconcile(ctx)
		switch {
		case err != nil:
			c.s.log.Error(err, "keeping the webhook caBundle current", "retryIn", backoff.String())
			wait, backoff = backoff, min(2*backoff, c.s.o.Resync)
		case missing:
			// A configuration not created yet (an install or a sync
			// that applies it after the Deployment): look again soon,
			// backing off to Resync, so the webhook works seconds after
			// it appears rather than up to a minute later, and a
			// configuration never installed costs a GET per Resync.
			wait, backoff = backoff, min(2*backoff, c.s.o.Resync)
		default:
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// reconcile writes the caBundle; missing reports a named configuration
// that does not exist.
func (c *caBundle) reconcile(ctx context.Context) (missing bool, _ error) {
	s := c.s
	var ca *caKeyPair
	var errs []error
	for _, name := range s.o.WebhookConfigurations {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := s.direct.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", name, err))
			} else {
				missing = true
			}
			continue
		}
		if mwc.Annotations[CAInjectorAnnotation] != "" {
			continue // cert-manager's CA injector owns caBundle
		}
		if ca == nil {
			var err error
			if ca, err = s.ensureCA(ctx); err != nil {
				return missing, err
			}
		}
		changed := 0
		for i := range mwc.Webhooks {
			svc := mwc.Webhooks[i].ClientConfig.Service
			if svc == nil || svc.Name != s.o.ServiceName || svc.Namespace != s.o.Namespace {
				continue
			}
			if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, ca.bundle) {
				mwc.Webhooks[i].ClientConfig.CABundle = ca.bundle
				changed++
			}
		}
		if changed == 0 {
			continue
		}
		if err := s.direct.Update(ctx, mwc); err != nil {
			errs = append(errs, fmt.Errorf("updating the caBundle of MutatingWebhookConfiguration %s: %w", name, err))
			continue
		}
		s.log.Info("updated the webhook caBundle", "configuration", name, "webhooks", changed)
	}
	if ca == nil {
		// No configuration needs weft's CA yet; still create it, so
		// replicas and the leader agree on one CA from the start.
		if !s.certManagerOnly(ctx) {
			if _, err := s.ensureCA(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return missing, errors.Join(errs...)
}

// certManagerOnly reports whether cert-manager owns the certificates, so a
// missing CA is no error.
func (s *Server) certManagerOnly(ctx context.Context) bool {
	cm, err := s.certManagerMode(ctx)
	return err == nil && cm
}
