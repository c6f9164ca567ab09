// Package certmanager issues workload certificates through cert-manager:
// one CertificateRequest per certificate, sent to the Issuer or
// ClusterIssuer named in MeshConfig, and deleted once it has an answer. No
// Certificate object (and no Secret) per workload: the key never leaves the
// weft controller, and cert-manager sees only the CSR.
package certmanager

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
)

const (
	// DefaultNamespace is where weft creates its CertificateRequests (an
	// Issuer, as opposed to a ClusterIssuer, must live there too).
	DefaultNamespace = "weft-system"
	// DefaultTimeout is how long Sign waits for cert-manager's answer.
	DefaultTimeout = 30 * time.Second
	// IdentityAnnotation names the SPIFFE ID a request is for.
	IdentityAnnotation = "weft.dev/identity"
	// ManagedByLabel marks weft's requests (value "weft"), so an operator, or
	// a sweep after a crash, finds them.
	ManagedByLabel = "app.kubernetes.io/managed-by"
)

// Options configure New. Client and IssuerRef.Name are required.
type Options struct {
	// Client needs create, get, watch and delete on certificaterequests in
	// Namespace.
	Client    client.WithWatch
	Namespace string // default DefaultNamespace
	// IssuerRef is MeshConfig's spec.certificates.certManager.issuerRef.
	// Kind defaults to Issuer and Group to cert-manager.io.
	IssuerRef cmmeta.IssuerReference
	// Timeout bounds the wait for Ready; default DefaultTimeout.
	Timeout time.Duration
	// Log receives the failures Sign cannot return (a failed delete).
	Log logr.Logger
	// TrustAnchors are the CA certificates MeshConfig pins
	// (spec.certificates.certManager.trustBundle); required. A certificate
	// cert-manager returns must chain to one of them, and they, not the
	// request's status.ca, are the Issued.Roots: weft never trusts a CA
	// because an issuer said so (docs/design/074).
	TrustAnchors []*x509.Certificate
	// TrustSource names where TrustAnchors came from, for messages
	// ("Secret weft-system/mesh-ca key ca.crt").
	TrustSource string
}

// Issuer implements certs.Issuer with cert-manager CertificateRequests.
type Issuer struct{ o Options }

var _ certs.Issuer = (*Issuer)(nil)

// New checks the options.
func New(o Options) (*Issuer, error) {
	if o.Client == nil {
		return nil, errors.New("certmanager.New: a client is required")
	}
	if o.IssuerRef.Name == "" {
		return nil, errors.New("certmanager.New: issuerRef.name is required (MeshConfig spec.certificates.certManager.issuerRef)")
	}
	if len(o.TrustAnchors) == 0 {
		return nil, errors.New("certmanager.New: the trust anchors are required (MeshConfig spec.certificates.certManager.trustBundle: the CA certificates that sign the mesh's workload certificates)")
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.IssuerRef.Kind == "" {
		o.IssuerRef.Kind = cmapi.IssuerKind
	}
	if o.IssuerRef.Group == "" {
		o.IssuerRef.Group = "cert-manager.io"
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return &Issuer{o: o}, nil
}

// Name implements certs.Issuer.
func (i *Issuer) Name() string { return "cert-manager" }

// RequestError is cert-manager's verdict on a request: Denied by an
// approver, InvalidRequest, or Failed by the issuer, with the condition's own
// message. It names the request so that an operator can find its events.
type RequestError struct {
	Request string // namespace/name
	Issuer  string // e.g. "Issuer mesh-ca"
	Reason  string // Denied, InvalidRequest, Failed
	Message string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("cert-manager CertificateRequest %s to %s: %s: %s", e.Request, e.Issuer, e.Reason, e.Message)
}

// TimeoutError says cert-manager did not answer before the deadline, with
// the request's last Ready condition.
type TimeoutError struct {
	Request, Issuer string
	After           time.Duration
	LastCondition   string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("cert-manager CertificateRequest %s to %s was not ready within %s (%s); is cert-manager running and the issuer Ready?", e.Request, e.Issuer, e.After, e.LastCondition)
}

func (i *Issuer) issuerName() string {
	return i.o.IssuerRef.Kind + " " + i.o.IssuerRef.Name
}

// Sign creates a CertificateRequest for req, waits for cert-manager's
// answer and deletes the request whatever the outcome.
func (i *Issuer) Sign(ctx context.Context, req certs.SignRequest) (*certs.Issued, error) {
	if err := req.Identity.Validate(); err != nil {
		return nil, err
	}
	if _, err := certs.ParseCSR(req.CSR, req.Identity); err != nil {
		return nil, err
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:    i.o.Namespace,
			GenerateName: namePrefix(req.Identity),
			Labels:       map[string]string{ManagedByLabel: "weft"},
			Annotations:  map[string]string{IdentityAnnotation: req.Identity.String()},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}),
			Duration:  &metav1.Duration{Duration: req.Lifetime},
			IsCA:      false,
			Usages:    []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth, cmapi.UsageClientAuth},
			IssuerRef: i.o.IssuerRef,
		},
	}
	if err := i.o.Client.Create(ctx, cr); err != nil {
		return nil, fmt.Errorf("creating a cert-manager CertificateRequest in %s for %s: %w", i.o.Namespace, req.Identity, err)
	}
	name := cr.Namespace + "/" + cr.Name
	defer i.delete(cr)

	wctx, cancel := context.WithTimeout(ctx, i.o.Timeout)
	defer cancel()
	issued, err := i.wait(wctx, cr)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return nil, &TimeoutError{Request: name, Issuer: i.issuerName(), After: i.o.Timeout, LastCondition: i.lastCondition(cr)}
	}
	return issued, err
}

// wait watches the request until it is answered. cr holds the latest
// version seen.
func (i *Issuer) wait(ctx context.Context, cr *cmapi.CertificateRequest) (*certs.Issued, error) {
	for {
		if issued, done, err := i.evaluate(cr); done {
			return issued, err
		}
		if err := i.watchOnce(ctx, cr); err != nil {
			return nil, err
		}
	}
}

// watchOnce follows cr from its resourceVersion until it changes in a way
// evaluate can decide on, the watch ends, or ctx ends.
func (i *Issuer) watchOnce(ctx context.Context, cr *cmapi.CertificateRequest) error {
	w, err := i.o.Client.Watch(ctx, &cmapi.CertificateRequestList{},
		client.InNamespace(cr.Namespace),
		client.MatchingFields{"metadata.name": cr.Name},
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: cr.ResourceVersion, AllowWatchBookmarks: false}},
	)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// E.g. "resourceVersion too old": read the current state and go on.
		return i.o.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The server ended the watch; resume from a fresh read.
				return i.o.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr)
			}
			switch ev.Type {
			case watch.Modified, watch.Added:
				if got, ok := ev.Object.(*cmapi.CertificateRequest); ok {
					got.DeepCopyInto(cr)
					if _, done, _ := i.evaluate(cr); done {
						return nil
					}
				}
			case watch.Deleted:
				return fmt.Errorf("cert-manager CertificateRequest %s/%s was deleted before it was answered", cr.Namespace, cr.Name)
			case watch.Error:
				return i.o.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr)
			}
		}
	}
}

// evaluate decides on a request: done with a certificate, done with
// cert-manager's own reason and message, or not done.
func (i *Issuer) evaluate(cr *cmapi.CertificateRequest) (*certs.Issued, bool, error) {
	name := cr.Namespace + "/" + cr.Name
	fail := func(reason, msg string) (*certs.Issued, bool, error) {
		return nil, true, &RequestError{Request: name, Issuer: i.issuerName(), Reason: reason, Message: msg}
	}
	var ready *cmapi.CertificateRequestCondition
	for k := range cr.Status.Conditions {
		c := &cr.Status.Conditions[k]
		switch {
		case c.Type == cmapi.CertificateRequestConditionDenied && c.Status == cmmeta.ConditionTrue:
			return fail(cmapi.CertificateRequestReasonDenied, c.Message)
		case c.Type == cmapi.CertificateRequestConditionInvalidRequest && c.Status == cmmeta.ConditionTrue:
			return fail("InvalidRequest", c.Message)
		case c.Type == cmapi.CertificateRequestConditionReady:
			ready = c
		}
	}
	if ready == nil {
		return nil, false, nil
	}
	switch {
	case ready.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0:
		issued, err := parseAnswer(cr)
		if err != nil {
			return nil, true, fmt.Errorf("cert-manager CertificateRequest %s: %w", name, err)
		}
		if err := i.pin(issued); err != nil {
			return nil, true, fmt.Errorf("cert-manager CertificateRequest %s to %s: %w", name, i.issuerName(), err)
		}
		return issued, true, nil
	case ready.Status == cmmeta.ConditionFalse && (ready.Reason == cmapi.CertificateRequestReasonFailed || ready.Reason == cmapi.CertificateRequestReasonDenied):
		return fail(ready.Reason, ready.Message)
	}
	return nil, false, nil
}

// parseAnswer splits status.certificate into the chain (leaf first) and
// takes the roots from status.ca. A self-signed certificate at the end of
// the chain is a root, not an intermediate.
func parseAnswer(cr *cmapi.CertificateRequest) (*certs.Issued, error) {
	chain, err := certs.ParseCertificatesPEM(cr.Status.Certificate)
	if err != nil {
		return nil, fmt.Errorf("status.certificate: %w", err)
	}
	var roots = chain[:0:0]
	if len(cr.Status.CA) > 0 {
		if roots, err = certs.ParseCertificatesPEM(cr.Status.CA); err != nil {
			return nil, fmt.Errorf("status.ca: %w", err)
		}
	}
	for len(chain) > 1 {
		last := chain[len(chain)-1]
		if last.CheckSignatureFrom(last) != nil || !last.IsCA {
			break
		}
		chain = chain[:len(chain)-1]
		known := false
		for _, r := range roots {
			known = known || r.Equal(last)
		}
		if !known {
			roots = append(roots, last)
		}
	}
	return &certs.Issued{Chain: chain, Roots: roots}, nil
}

// pin replaces the roots cert-manager reported with the trust anchors
// MeshConfig pins, after checking that the chain leads to one of them. A
// root the issuer appended to status.certificate or reported in status.ca
// is offered as an intermediate only: an anchor may be an intermediate CA
// (a mesh CA under a shared corporate root), and a chain through it then
// verifies with the anchor as its end.
func (i *Issuer) pin(issued *certs.Issued) error {
	roots := x509.NewCertPool()
	for _, a := range i.o.TrustAnchors {
		roots.AddCert(a)
	}
	inter := x509.NewCertPool()
	for _, c := range issued.Chain[1:] {
		inter.AddCert(c)
	}
	// What cert-manager called roots may sit between the leaf and a pinned
	// anchor; they are never anchors themselves.
	for _, c := range issued.Roots {
		inter.AddCert(c)
	}
	leaf := issued.Leaf()
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		src := i.o.TrustSource
		if src == "" {
			src = "the pinned trust bundle"
		}
		return fmt.Errorf("the certificate (issued by %q) does not chain to a CA of MeshConfig spec.certificates.certManager.trustBundle (%s): %v; "+
			"put the issuer's CA certificate in that bundle, or point spec.certificates.certManager.issuerRef at an issuer signing with a CA in it", leaf.Issuer.String(), src, err)
	}
	issued.Roots = append(issued.Roots[:0:0], i.o.TrustAnchors...)
	return nil
}

// lastCondition reads the request once more to say why it is still waiting.
func (i *Issuer) lastCondition(cr *cmapi.CertificateRequest) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = i.o.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr)
	var parts []string
	for _, c := range cr.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	if len(parts) == 0 {
		return "no conditions: no cert-manager controller has looked at it"
	}
	return "last conditions: " + strings.Join(parts, "; ")
}

// delete removes a finished request, with its own deadline: the caller's
// context may be the reason it finished.
func (i *Issuer) delete(cr *cmapi.CertificateRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := i.o.Client.Delete(ctx, cr); err != nil && !apierrors.IsNotFound(err) {
		// Left for DeleteLeftovers; nothing secret in it (the key stays here).
		i.o.Log.Error(err, "deleting a finished CertificateRequest", "request", cr.Namespace+"/"+cr.Name)
	}
}

// DeleteLeftovers deletes weft's CertificateRequests in the namespace that
// are older than twice the timeout: requests a crashed replica left behind.
// Younger ones may be in flight at another replica (every replica issues for
// its own proxies), so they are left alone. The leader calls it now and then.
func (i *Issuer) DeleteLeftovers(ctx context.Context, now time.Time) (int, error) {
	var list cmapi.CertificateRequestList
	if err := i.o.Client.List(ctx, &list, client.InNamespace(i.o.Namespace), client.MatchingLabels{ManagedByLabel: "weft"}); err != nil {
		return 0, fmt.Errorf("listing weft CertificateRequests in %s: %w", i.o.Namespace, err)
	}
	n := 0
	for k := range list.Items {
		cr := &list.Items[k]
		if now.Sub(cr.CreationTimestamp.Time) < 2*i.o.Timeout {
			continue
		}
		if err := i.o.Client.Delete(ctx, cr); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("deleting the leftover CertificateRequest %s/%s: %w", cr.Namespace, cr.Name, err)
		}
		n++
	}
	return n, nil
}

// namePrefix is generateName for an identity's request:
// weft-<namespace>-<serviceaccount>- cut to leave room for the random
// suffix. The full identity is in IdentityAnnotation.
func namePrefix(id certs.Identity) string {
	p := "weft-" + id.Namespace + "-" + id.ServiceAccount
	p = strings.ReplaceAll(p, ".", "-")
	if len(p) > 52 {
		p = strings.TrimRight(p[:52], "-")
	}
	return p + "-"
}
