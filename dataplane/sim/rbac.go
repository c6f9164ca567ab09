package sim

import (
	"net/netip"
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// RBACInput is what an RBAC filter can see of a connection and request.
type RBACInput struct {
	// Local is the connection's local address (after original_dst: the
	// destination the caller dialled); Remote its peer.
	Local, Remote netip.AddrPort
	// PeerURIs are the URI SANs of the peer's verified certificate; TLS
	// says whether the connection was TLS at all.
	TLS      bool
	PeerURIs []string
	SNI      string
	// Request is nil for the network filter: header and path rules never
	// match there.
	Request *Request
}

// RBACResult is an RBAC engine's decision.
type RBACResult struct {
	Allowed bool
	// Policy is the matched policy's name ("" when none matched).
	Policy string
}

// EvalRBAC is an RBAC engine (RoleBasedAccessControlEngineImpl in
// source/extensions/filters/common/rbac/engine_impl.cc). A policy matches
// when one of its permissions and one of its principals match; policies are
// tried in name order (they are a protobuf map, which Envoy copies into an
// ordered std::map) and the first match names the effective policy.
// ALLOW allows only a match; DENY allows only a non-match; LOG allows all.
// A nil config allows everything.
func EvalRBAC(cfg *rbacv3.RBAC, in RBACInput) RBACResult {
	if cfg == nil {
		return RBACResult{Allowed: true}
	}
	names := make([]string, 0, len(cfg.GetPolicies()))
	for n := range cfg.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	matched := ""
	for _, n := range names {
		p := cfg.GetPolicies()[n]
		if anyPermission(p.GetPermissions(), in) && anyPrincipal(p.GetPrincipals(), in) {
			matched = n
			break
		}
	}
	switch cfg.GetAction() {
	case rbacv3.RBAC_ALLOW:
		return RBACResult{Allowed: matched != "", Policy: matched}
	case rbacv3.RBAC_DENY:
		return RBACResult{Allowed: matched == "", Policy: matched}
	}
	return RBACResult{Allowed: true, Policy: matched}
}

func anyPermission(ps []*rbacv3.Permission, in RBACInput) bool {
	for _, p := range ps {
		if matchPermission(p, in) {
			return true
		}
	}
	return false
}

func anyPrincipal(ps []*rbacv3.Principal, in RBACInput) bool {
	for _, p := range ps {
		if matchPrincipal(p, in) {
			return true
		}
	}
	return false
}

// matchPermission: the Permission matchers of
// source/extensions/filters/common/rbac/matchers.cc. Rules that are not
// encoded match nothing (the walk errs towards "not matched", which for a
// DENY policy is the unsafe side: keep them out of weft's output or encode
// them).
func matchPermission(p *rbacv3.Permission, in RBACInput) bool {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any
	case *rbacv3.Permission_AndRules:
		for _, q := range r.AndRules.GetRules() {
			if !matchPermission(q, in) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		return anyPermission(r.OrRules.GetRules(), in)
	case *rbacv3.Permission_NotRule:
		return !matchPermission(r.NotRule, in)
	case *rbacv3.Permission_Header:
		// HeaderMatcher::matches: no headers (the network filter) is no match.
		return in.Request != nil && MatchHeader(r.Header, in.Request)
	case *rbacv3.Permission_UrlPath:
		// PathMatcher::matches compares the path without query.
		return in.Request != nil && MatchString(r.UrlPath.GetPath(), pathOnly(in.Request.path()))
	case *rbacv3.Permission_DestinationIp:
		return inCIDR(r.DestinationIp.GetAddressPrefix(), r.DestinationIp.GetPrefixLen().GetValue(), r.DestinationIp.GetPrefixLen() != nil, in.Local.Addr())
	case *rbacv3.Permission_DestinationPort:
		return uint32(in.Local.Port()) == r.DestinationPort
	case *rbacv3.Permission_DestinationPortRange:
		port := int32(in.Local.Port())
		return port >= r.DestinationPortRange.GetStart() && port < r.DestinationPortRange.GetEnd()
	case *rbacv3.Permission_RequestedServerName:
		return MatchString(r.RequestedServerName, in.SNI)
	}
	return false
}

// matchPrincipal: the Principal matchers of
// source/extensions/filters/common/rbac/matchers.cc.
// AuthenticatedMatcher needs a TLS connection with a peer certificate; with
// no principal_name any such peer matches, else the name is compared with
// each URI SAN (then DNS SANs and the subject, not modelled: weft's
// certificates carry one URI SAN). source_ip and direct_remote_ip read the
// connection's peer; remote_ip reads the address the HCM trusted from
// x-forwarded-for, which with use_remote_address and no trusted hops is the
// peer too.
func matchPrincipal(p *rbacv3.Principal, in RBACInput) bool {
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return r.Any
	case *rbacv3.Principal_AndIds:
		for _, q := range r.AndIds.GetIds() {
			if !matchPrincipal(q, in) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		return anyPrincipal(r.OrIds.GetIds(), in)
	case *rbacv3.Principal_NotId:
		return !matchPrincipal(r.NotId, in)
	case *rbacv3.Principal_Authenticated_:
		if !in.TLS || len(in.PeerURIs) == 0 {
			return false
		}
		if r.Authenticated.GetPrincipalName() == nil {
			return true
		}
		for _, u := range in.PeerURIs {
			if MatchString(r.Authenticated.GetPrincipalName(), u) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_SourceIp:
		return inCIDR(r.SourceIp.GetAddressPrefix(), r.SourceIp.GetPrefixLen().GetValue(), r.SourceIp.GetPrefixLen() != nil, in.Remote.Addr())
	case *rbacv3.Principal_DirectRemoteIp:
		return inCIDR(r.DirectRemoteIp.GetAddressPrefix(), r.DirectRemoteIp.GetPrefixLen().GetValue(), r.DirectRemoteIp.GetPrefixLen() != nil, in.Remote.Addr())
	case *rbacv3.Principal_RemoteIp:
		return inCIDR(r.RemoteIp.GetAddressPrefix(), r.RemoteIp.GetPrefixLen().GetValue(), r.RemoteIp.GetPrefixLen() != nil, in.Remote.Addr())
	case *rbacv3.Principal_Header:
		return in.Request != nil && MatchHeader(r.Header, in.Request)
	case *rbacv3.Principal_UrlPath:
		return in.Request != nil && MatchString(r.UrlPath.GetPath(), pathOnly(in.Request.path()))
	}
	return false
}

func inCIDR(prefix string, bits uint32, hasBits bool, a netip.Addr) bool {
	p, err := netip.ParseAddr(prefix)
	if err != nil {
		return false
	}
	n := p.BitLen()
	if hasBits {
		n = int(bits)
	}
	pre, err := p.Prefix(n)
	return err == nil && pre.Addr().Is4() == a.Unmap().Is4() && pre.Contains(a.Unmap())
}
