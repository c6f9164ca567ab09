package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Identity is a workload's SPIFFE ID:
// spiffe://<TrustDomain>/ns/<Namespace>/sa/<ServiceAccount>.
//
// The zero Identity is invalid; build one with NewIdentity or ParseIdentity,
// which validate every part.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

const spiffeScheme = "spiffe://"

// trustDomainRE matches a lower-case DNS name, the same rule MeshConfig's
// spec.trustDomain enforces in the API server. (SPIFFE itself also allows
// '_'; weft is stricter so a trust domain is always a valid DNS name.)
var trustDomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// NewIdentity validates the parts and returns the identity.
func NewIdentity(trustDomain, namespace, serviceAccount string) (Identity, error) {
	id := Identity{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	return id, id.Validate()
}

// Validate reports the first invalid part, naming it.
func (id Identity) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Label(id.Namespace); len(errs) > 0 {
		return fmt.Errorf("invalid namespace %q in workload identity: %s", id.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(id.ServiceAccount); len(errs) > 0 {
		return fmt.Errorf("invalid service account name %q in workload identity: %s", id.ServiceAccount, strings.Join(errs, "; "))
	}
	return nil
}

// ValidateTrustDomain checks a trust domain: a lower-case DNS name of at
// most 253 characters, such as cluster.local.
func ValidateTrustDomain(td string) error {
	switch {
	case td == "":
		return errors.New("trust domain is empty")
	case len(td) > 253:
		return fmt.Errorf("trust domain is %d characters long, at most 253 are allowed", len(td))
	case !trustDomainRE.MatchString(td):
		return fmt.Errorf("invalid trust domain %q: must be a lower-case DNS name such as cluster.local", td)
	}
	return nil
}

// String formats the SPIFFE ID. It does not validate.
func (id Identity) String() string {
	return spiffeScheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the SPIFFE ID as the URI SAN of a certificate.
func (id Identity) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// TrustDomainID is spiffe://<trustDomain>, the SPIFFE ID of the trust
// domain itself.
func (id Identity) TrustDomainID() string { return spiffeScheme + id.TrustDomain }

// ParseIdentity parses and validates a workload SPIFFE ID. Only the weft
// form spiffe://<td>/ns/<ns>/sa/<sa> is accepted: no port, user, query,
// fragment, percent-encoding or extra path segments.
func ParseIdentity(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return Identity{}, fmt.Errorf("invalid workload identity %q: must start with %s", s, spiffeScheme)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return Identity{}, fmt.Errorf("invalid workload identity %q: no path after the trust domain; want spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>", s)
	}
	if strings.ContainsAny(s, "?#%@") {
		return Identity{}, fmt.Errorf("invalid workload identity %q: query, fragment, user info and percent-encoding are not allowed", s)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return Identity{}, fmt.Errorf("invalid workload identity %q: path must be /ns/<namespace>/sa/<serviceaccount>", s)
	}
	id := Identity{TrustDomain: td, Namespace: parts[1], ServiceAccount: parts[3]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("invalid workload identity %q: %w", s, err)
	}
	return id, nil
}

// IdentityFromCertificate returns the identity in a certificate's single
// URI SAN. A workload certificate must carry exactly one URI SAN, the
// SPIFFE ID (X509-SVID rules).
func IdentityFromCertificate(cert *x509.Certificate) (Identity, error) {
	return identityFromURIs(cert.URIs)
}

func identityFromURIs(uris []*url.URL) (Identity, error) {
	if len(uris) != 1 {
		return Identity{}, fmt.Errorf("want exactly one URI SAN (the SPIFFE ID), found %d", len(uris))
	}
	return ParseIdentity(uris[0].String())
}
