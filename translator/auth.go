package translator

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// ReasonNamespaceNotFound (ResolvedRefs=False, AuthPolicy): a rule names a
// namespace that does not exist. The policy still applies; that entry
// matches nobody until the namespace is created.
const ReasonNamespaceNotFound = "NamespaceNotFound"

// authPolicies attaches AuthPolicies to Services or namespaces. Evaluation
// order is the proxy's business (translator/envoy): Deny beats Allow, and
// once any Allow policy selects a workload, requests that match no Allow
// rule are denied.
func (t *translation) authPolicies() {
	namespaces := map[string]bool{}
	for _, ns := range t.in.Namespaces {
		namespaces[ns.Name] = true
	}
	for _, ap := range sortedByAge(t.in.AuthPolicies) {
		ps := t.track(KindAuthPolicy, ap)
		ref := ir.PolicyRef{Kind: KindAuthPolicy, Namespace: ap.Namespace, Name: ap.Name, Generation: ap.Generation}
		pol := &ir.AuthPolicy{Source: ref, Action: ir.AuthAction(ap.Spec.Action), DryRun: ap.Spec.Mode == v1alpha1.AuthModeDryRun}
		if pol.Action != ir.AuthAllow && pol.Action != ir.AuthDeny {
			ps.reject(v1alpha1.ReasonInvalid, "spec.action: %q is not Allow or Deny", ap.Spec.Action)
			continue
		}
		if len(ap.Spec.Rules) == 0 {
			ps.reject(v1alpha1.ReasonInvalid, "spec.rules must list at least one rule; to match every request write rules: [{}]")
			continue
		}
		invalid := false
		for i, r := range ap.Spec.Rules {
			rule, err := t.authRule(r, fmt.Sprintf("spec.rules[%d]", i), namespaces, ps)
			if err != nil {
				ps.reject(v1alpha1.ReasonInvalid, "%v", err)
				invalid = true
				break
			}
			pol.Rules = append(pol.Rules, rule)
		}
		if invalid {
			continue
		}
		for i, tr := range ap.Spec.TargetRefs {
			field := fmt.Sprintf("spec.targetRefs[%d]", i)
			switch {
			case tr.Group != v1alpha1.GroupCore:
				ps.reject(v1alpha1.ReasonInvalid, "%s.group: must be \"\" (a Service or a Namespace)", field)
			case tr.Kind == "Namespace" && tr.Name != ap.Namespace:
				ps.reject(v1alpha1.ReasonInvalid, "%s.name: a Namespace target must be the policy's own namespace %s, not %s; create the policy in %s instead",
					field, ap.Namespace, tr.Name, tr.Name)
			case tr.Kind == "Namespace":
				ns := t.namespace(ap.Namespace)
				ns.AuthPolicies = append(ns.AuthPolicies, pol)
			case tr.Kind == "Service":
				svc := t.byKey[ir.ServiceKey{Namespace: ap.Namespace, Name: tr.Name}]
				if svc == nil {
					ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s: Service %q does not exist in namespace %s; the policy protects nothing until it does",
						field, tr.Name, ap.Namespace)
					continue
				}
				svc.AuthPolicies = append(svc.AuthPolicies, pol)
			default:
				ps.reject(v1alpha1.ReasonInvalid, "%s.kind: %q is not Service or Namespace", field, tr.Kind)
			}
		}
		if pol.DryRun {
			ps.proxyless = proxylessDryRunGap(ap)
		}
	}
}

// proxylessDryRunGap says what a DryRun policy does on proxyless gRPC
// servers, for the ProxylessLimited condition: nothing. gRPC's RBAC filter
// has no shadow rules (gRFC A41), so translator/envoy leaves DryRun
// policies out of a proxyless server's configuration. Like the retry gaps
// it depends on the spec alone, not on which servers exist (design 057).
func proxylessDryRunGap(ap *v1alpha1.AuthPolicy) string {
	var targets []string
	for _, tr := range ap.Spec.TargetRefs {
		targets = append(targets, tr.Kind+" "+tr.Name)
	}
	return fmt.Sprintf("spec.mode DryRun: proxyless gRPC servers (weft.dev/proxyless: grpc) behind %s have no shadow rules, so there this policy neither denies nor counts; "+
		"sidecars count what it would deny. Try it on workloads with a sidecar, or set spec.mode: Enforce", strings.Join(targets, ", "))
}

func (t *translation) authRule(r v1alpha1.AuthRule, field string, namespaces map[string]bool, ps *policyStatus) (ir.AuthRule, error) {
	var out ir.AuthRule
	if f := r.From; f != nil {
		for i, sa := range f.ServiceAccounts {
			ns, name, ok := strings.Cut(sa, "/")
			if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return out, fmt.Errorf("%s.from.serviceAccounts[%d]: %q must be written namespace/name, such as shop/frontend", field, i, sa)
			}
			if !namespaces[ns] {
				ps.unresolved(ReasonNamespaceNotFound, "%s.from.serviceAccounts[%d]: namespace %q does not exist; the entry matches nobody until it does", field, i, ns)
			}
			out.Principals = append(out.Principals, spiffeID(t.mesh.TrustDomain, ns, name))
		}
		for i, ns := range f.Namespaces {
			if !namespaces[ns] {
				ps.unresolved(ReasonNamespaceNotFound, "%s.from.namespaces[%d]: namespace %q does not exist; the entry matches nobody until it does", field, i, ns)
			}
			out.Namespaces = append(out.Namespaces, ns)
		}
		for i, b := range f.IPBlocks {
			p, err := netip.ParsePrefix(b)
			if err != nil {
				return out, fmt.Errorf("%s.from.ipBlocks[%d]: %q is not a CIDR such as 10.0.0.0/8 or 10.1.2.3/32", field, i, b)
			}
			out.IPBlocks = append(out.IPBlocks, p.Masked().String())
		}
	}
	if to := r.To; to != nil {
		out.Ports = append(out.Ports, to.Ports...)
		for _, m := range to.Methods {
			out.Methods = append(out.Methods, string(m))
		}
		for _, p := range to.Paths {
			if p.Type == v1alpha1.PathMatchExact {
				out.PathsExact = append(out.PathsExact, p.Value)
			} else {
				out.PathsPrefix = append(out.PathsPrefix, p.Value)
			}
		}
	}
	return out, nil
}
