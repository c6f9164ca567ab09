package envoy

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/ir"
)

// AuthPolicy semantics, as Envoy RBAC:
//
//   - Deny beats Allow: a DENY filter runs first, with every enforced Deny
//     policy.
//   - Once any Allow policy selects a workload, a request that matches no
//     Allow rule is denied: an ALLOW filter runs second, with every enforced
//     Allow policy, and only when there is one.
//   - DryRun policies are shadow rules: Envoy evaluates them, counts the
//     result in the rbac.shadow_* stats and logs it in dynamic metadata, and
//     denies nothing. Shadow ALLOW rules include the enforced Allow policies,
//     so they show what the mesh would deny if the dry-run ones were on.
//
// Each rule becomes one RBAC policy: it matches when one of its sources and
// its whole operation match.
type rbacSet struct {
	deny, shadowDeny, allow, shadowAllow map[string]*rbacv3.Policy
}

// rbacPolicies sorts a workload's policies into the four sets. For TCP
// (http false), rules with methods or paths cannot match and are left out.
func (v *view) rbacPolicies(http bool) rbacSet {
	s := rbacSet{map[string]*rbacv3.Policy{}, map[string]*rbacv3.Policy{}, map[string]*rbacv3.Policy{}, map[string]*rbacv3.Policy{}}
	hasDryRunAllow := false
	for _, pol := range v.authz {
		for i, r := range pol.Rules {
			if !http && len(r.Methods)+len(r.PathsExact)+len(r.PathsPrefix) > 0 {
				continue
			}
			name := fmt.Sprintf("%s/%s[%d]", pol.Source.Namespace, pol.Source.Name, i)
			p := v.rbacPolicy(r)
			switch {
			case pol.Action == ir.AuthDeny && !pol.DryRun:
				s.deny[name] = p
			case pol.Action == ir.AuthDeny:
				s.shadowDeny[name] = p
			case !pol.DryRun:
				s.allow[name] = p
				s.shadowAllow[name] = p
			default:
				s.shadowAllow[name] = p
				hasDryRunAllow = true
			}
		}
	}
	// An Allow policy whose every rule is HTTP-only still selects a TCP
	// port's workload: with no rule left, nothing is allowed there.
	if !hasDryRunAllow {
		s.shadowAllow = map[string]*rbacv3.Policy{}
	}
	return s
}

// hasAllow reports whether an enforced Allow policy selects the workload,
// which turns the default for unmatched requests into deny.
func (v *view) hasAllow(dryRun bool) bool {
	for _, pol := range v.authz {
		if pol.Action == ir.AuthAllow && pol.DryRun == dryRun {
			return true
		}
	}
	return false
}

func (v *view) rbacPolicy(r ir.AuthRule) *rbacv3.Policy {
	var ids []*rbacv3.Principal
	for _, p := range r.Principals {
		ids = append(ids, authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}))
	}
	for _, ns := range r.Namespaces {
		prefix := fmt.Sprintf("spiffe://%s/ns/%s/sa/", v.mesh.TrustDomain, ns)
		ids = append(ids, authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}))
	}
	for _, b := range r.IPBlocks {
		ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(b)}})
	}
	if len(ids) == 0 {
		ids = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}

	var and []*rbacv3.Permission
	if len(r.Ports) > 0 {
		var or []*rbacv3.Permission
		for _, p := range r.Ports {
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(p)}})
		}
		and = append(and, anyOf(or))
	}
	if len(r.Methods) > 0 {
		var or []*rbacv3.Permission
		for _, m := range r.Methods {
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: exactHeader(":method", m)}})
		}
		and = append(and, anyOf(or))
	}
	if len(r.PathsExact)+len(r.PathsPrefix) > 0 {
		var or []*rbacv3.Permission
		for _, p := range r.PathsExact {
			or = append(or, urlPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}))
		}
		for _, p := range r.PathsPrefix {
			or = append(or, pathPrefix(p)...)
		}
		and = append(and, anyOf(or))
	}
	perm := &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	if len(and) == 1 {
		perm = and[0]
	} else if len(and) > 1 {
		perm = &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
	}
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{perm}, Principals: ids}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func anyOf(or []*rbacv3.Permission) *rbacv3.Permission {
	if len(or) == 1 {
		return or[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: or}}}
}

// pathPrefix matches a path by prefix element by element, as the API
// documents: /api matches /api and /api/v1 but not /apiv1 or /api-admin.
// A plain string prefix would let an Allow on /api admit /api-admin. A
// trailing slash in the value changes nothing (/api/ is /api), and / alone
// matches every path.
func pathPrefix(p string) []*rbacv3.Permission {
	q := strings.TrimRight(p, "/")
	if q == "" {
		return []*rbacv3.Permission{urlPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/"}})}
	}
	return []*rbacv3.Permission{
		urlPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q}}),
		urlPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: q + "/"}}),
	}
}

func urlPath(m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

func cidr(block string) *corev3.CidrRange {
	// The translator has already checked and masked the prefix.
	p := netip.MustParsePrefix(block)
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}
