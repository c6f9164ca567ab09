package meshgen

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// This file is the reference evaluator of AuthPolicy, written from
// docs/api.md ("AuthPolicy", "How policies combine for a workload") and
// nothing else: no RBAC protos, no translator code. It decides what weft's
// API promises for one request to one workload.

// AuthRequest is one request (or TCP connection) as the receiving
// workload's sidecar should judge it.
type AuthRequest struct {
	// Namespace and Labels of the destination pod.
	Namespace string
	Labels    map[string]string
	// MTLS: the caller reached the workload over mesh mTLS, with the
	// identity of SourceNamespace/SourceServiceAccount. Without it the
	// caller has no identity ("callers without mesh mTLS never match"
	// serviceAccounts or namespaces).
	MTLS                                  bool
	SourceNamespace, SourceServiceAccount string
	// Peer is the connection's peer address.
	Peer netip.Addr
	// Port is the destination workload (container) port.
	Port int32
	// HTTP: the request is HTTP on a port the mesh knows as HTTP; methods
	// and paths match nothing else.
	HTTP         bool
	Method, Path string
}

// Decision is what the API promises.
type Decision struct {
	Allowed bool
	// By names the policy (and rule) that decided: a Deny that matched,
	// or "no Allow rule matched" when Allow policies select the workload.
	By string
	// DryRunWouldDeny: a DryRun policy would have denied it (recorded,
	// never enforced).
	DryRunWouldDeny bool
}

// Authorize applies every AuthPolicy of the inputs to r. services are the
// cluster's Services (a Service target selects the pods its selector
// matches in the policy's namespace).
func Authorize(policies []*v1alpha1.AuthPolicy, services []*corev1.Service, r AuthRequest) Decision {
	var deny, allowMatched string
	hasAllow := false
	dryDeny, dryHasAllow, dryAllowed := false, false, false
	for _, p := range policies {
		if !selectsWorkload(p, services, r) {
			continue
		}
		matched := -1
		for i, rule := range p.Spec.Rules {
			if ruleMatches(rule, r) {
				matched = i
				break
			}
		}
		name := fmt.Sprintf("%s/%s", p.Namespace, p.Name)
		if p.Spec.Mode == v1alpha1.AuthModeDryRun {
			switch p.Spec.Action {
			case v1alpha1.AuthActionDeny:
				dryDeny = dryDeny || matched >= 0
			case v1alpha1.AuthActionAllow:
				dryHasAllow = true
				dryAllowed = dryAllowed || matched >= 0
			}
			continue
		}
		switch p.Spec.Action {
		case v1alpha1.AuthActionDeny:
			if matched >= 0 && deny == "" {
				deny = fmt.Sprintf("Deny %s rule %d", name, matched)
			}
		case v1alpha1.AuthActionAllow:
			hasAllow = true
			if matched >= 0 && allowMatched == "" {
				allowMatched = fmt.Sprintf("Allow %s rule %d", name, matched)
			}
		}
	}
	d := Decision{DryRunWouldDeny: dryDeny || (dryHasAllow && !dryAllowed)}
	switch {
	case deny != "": // 1. Deny beats Allow.
		d.By = deny
	case hasAllow && allowMatched == "": // 2. once there is an Allow, what it does not allow is denied
		d.By = "no Allow rule matched"
	case hasAllow:
		d.Allowed, d.By = true, allowMatched
	default: // 3. no Allow policy: allowed
		d.Allowed, d.By = true, "no policy denies it"
	}
	return d
}

// selectsWorkload: the policy protects the destination workload, through a
// Service of its namespace that selects the pod or through the namespace
// itself (a Namespace target naming another namespace is not accepted).
func selectsWorkload(p *v1alpha1.AuthPolicy, services []*corev1.Service, r AuthRequest) bool {
	if p.Namespace != r.Namespace {
		return false
	}
	for _, t := range p.Spec.TargetRefs {
		if t.Group != "" {
			continue
		}
		switch t.Kind {
		case "Namespace":
			if t.Name == p.Namespace {
				return true
			}
		case "Service":
			for _, s := range services {
				if s.Namespace == p.Namespace && s.Name == t.Name && selectorMatches(s.Spec.Selector, r.Labels) {
					return true
				}
			}
		}
	}
	return false
}

// selectorMatches is a Service's selector: every key equal; an empty
// selector selects no pod (its endpoints are managed by hand).
func selectorMatches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ruleMatches: from and to both match; an omitted one matches everything.
func ruleMatches(rule v1alpha1.AuthRule, r AuthRequest) bool {
	return (rule.From == nil || sourceMatches(rule.From, r)) && (rule.To == nil || operationMatches(rule.To, r))
}

// sourceMatches: any entry of any list.
func sourceMatches(s *v1alpha1.AuthSource, r AuthRequest) bool {
	if r.MTLS {
		if slices.Contains(s.ServiceAccounts, r.SourceNamespace+"/"+r.SourceServiceAccount) {
			return true
		}
		if slices.Contains(s.Namespaces, r.SourceNamespace) {
			return true
		}
	}
	for _, b := range s.IPBlocks {
		if p, err := netip.ParsePrefix(b); err == nil && r.Peer.IsValid() && p.Contains(r.Peer.Unmap()) {
			return true
		}
	}
	return false
}

// operationMatches: every list that is set.
func operationMatches(o *v1alpha1.AuthOperation, r AuthRequest) bool {
	if o.Ports != nil && !slices.Contains(o.Ports, r.Port) {
		return false
	}
	if o.Methods != nil && (!r.HTTP || !slices.Contains(o.Methods, v1alpha1.HTTPMethod(r.Method))) {
		return false
	}
	if o.Paths != nil {
		if !r.HTTP {
			return false
		}
		path, _, _ := strings.Cut(r.Path, "?")
		ok := false
		for _, pm := range o.Paths {
			if pathMatches(pm, path) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// pathMatches: Exact compares the whole path; PathPrefix (the default)
// compares element by element: /api matches /api and /api/v1, not /apiv1.
func pathMatches(pm v1alpha1.PathMatch, path string) bool {
	if pm.Type == v1alpha1.PathMatchExact {
		return path == pm.Value
	}
	v := strings.TrimRight(pm.Value, "/")
	if v == "" {
		return true // "/" prefixes every path
	}
	return path == v || strings.HasPrefix(path, v+"/")
}
