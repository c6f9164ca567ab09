// Package rbac tests weft-controller's RBAC (the YAML in this folder)
// against what the code needs. internal/controller/webhookserver and internal/controller/trust
// also run their integration tests as this ServiceAccount with these
// manifests applied, which checks their part against a real authorizer.
package rbac

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const namespace = "weft-system"

// need is one request the controller makes. Namespace "" is cluster-wide
// (or a cluster-scoped resource); Name "" is a request without a name
// (list, watch, create).
type need struct {
	Group, Resource, Verb, Namespace, Name string
	Why                                    string
}

func needs() []need {
	var out []need
	add := func(why, group, resource, ns, name string, verbs ...string) {
		for _, v := range verbs {
			out = append(out, need{group, resource, v, ns, name, why})
		}
	}
	// internal/controller/store: the translator's inputs, cluster-wide informers.
	for _, r := range [][2]string{{"", "namespaces"}, {"", "services"}, {"", "pods"}, {"discovery.k8s.io", "endpointslices"},
		{"mesh.weft.dev", "trafficsplits"}, {"mesh.weft.dev", "retrypolicies"}, {"mesh.weft.dev", "backendtrafficpolicies"}, {"mesh.weft.dev", "ratelimitpolicies"}, {"mesh.weft.dev", "authpolicies"},
		{"mesh.weft.dev", "meshconfigs"}, {"gateway.networking.k8s.io", "httproutes"}, {"gateway.networking.k8s.io", "grpcroutes"}} {
		add("internal/controller/store", r[0], r[1], "", "", "list", "watch")
	}
	// internal/controller/store: deleted ServiceAccounts end their streams (metadata-only informer).
	add("internal/controller/store", "", "serviceaccounts", "", "", "list", "watch")
	// internal/controller/store: Nodes' topology labels, a proxy's zone (metadata-only informer).
	add("internal/controller/store", "", "nodes", "", "", "get", "list", "watch")
	// internal/controller/status: policy status, written by the leader.
	for _, r := range [][2]string{{"mesh.weft.dev", "trafficsplits/status"}, {"mesh.weft.dev", "retrypolicies/status"}, {"mesh.weft.dev", "backendtrafficpolicies/status"}, {"mesh.weft.dev", "ratelimitpolicies/status"},
		{"mesh.weft.dev", "authpolicies/status"}, {"mesh.weft.dev", "meshconfigs/status"}, {"gateway.networking.k8s.io", "httproutes/status"}, {"gateway.networking.k8s.io", "grpcroutes/status"}} {
		add("internal/controller/status", r[0], r[1], "", "x", "update")
	}
	// internal/controller: leader election.
	add("leader election", "coordination.k8s.io", "leases", namespace, "weft-controller", "get", "update")
	add("leader election", "coordination.k8s.io", "leases", namespace, "", "create")
	add("leader election events", "", "events", namespace, "", "create")
	// internal/controller/replicas: each replica's report (Publisher: distribution
	// and root rotation facts) and the leader's watch, consistent list and
	// expiry of everyone's (Collector).
	add("replica report", "coordination.k8s.io", "leases", namespace, "x", "get", "update", "delete")
	add("replica report", "coordination.k8s.io", "leases", namespace, "", "create", "list", "watch")
	// certs/builtin.RootStore (Ensure on the leader, Load on replicas) and
	// internal/controller/trust.
	add("mesh root CA", "", "secrets", namespace, "weft-ca-root", "get")
	add("mesh root CA", "", "secrets", namespace, "", "create")
	// internal/controller: root rotation (trust follower on every
	// replica, rotation driver on the leader; their facts travel in the
	// replica reports above).
	add("root rotation", "", "secrets", namespace, "weft-ca-root", "update")
	add("root rotation", "", "secrets", namespace, "weft-ca-root-next", "get", "delete")
	add("root rotation", "", "secrets", namespace, "", "list", "watch")
	add("root rotation", "mesh.weft.dev", "meshconfigs", "", "", "watch")
	// internal/controller/webhookserver.
	add("webhook CA", "", "secrets", namespace, "weft-webhook-ca", "get")
	add("webhook CA", "", "secrets", namespace, "", "create")
	add("cert-manager webhook certificate", "", "secrets", namespace, "weft-webhook-tls", "get")
	add("webhook caBundle", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "weft-sidecar-injector", "get", "update", "patch")
	add("webhook handler", "", "namespaces", "", "x", "get")
	add("webhook handler", "mesh.weft.dev", "meshconfigs", "", "mesh", "get")
	// internal/controller/trust.
	add("trust bundle ConfigMaps", "", "configmaps", "", "weft-root-ca", "list", "watch", "get", "update")
	add("trust bundle ConfigMaps", "", "configmaps", "any", "", "create")
	// internal/controller/trust: MeshConfig's cert-manager trustBundle (a
	// Secret is read with the rights above).
	add("pinned cert-manager CA", "", "configmaps", namespace, "x", "get")
	add("pinned cert-manager CA", "", "secrets", namespace, "x", "get")
	// internal/controller/injectcheck (leader): whole pods, their condition, Events.
	add("pods missing the sidecar", "", "pods", "any", "x", "get")
	add("pods missing the sidecar", "", "pods/status", "any", "x", "patch")
	add("pods missing the sidecar", "events.k8s.io", "events", "any", "", "create")
	add("pods missing the sidecar", "events.k8s.io", "events", "any", "x", "patch")
	// xds: proxy authentication.
	add("xDS token authentication", "authentication.k8s.io", "tokenreviews", "", "", "create")
	// certs/certmanager: workload certificates.
	add("MeshConfig ResolvedRefs", "cert-manager.io", "issuers", namespace, "x", "get")
	add("MeshConfig ResolvedRefs", "cert-manager.io", "clusterissuers", "", "x", "get")
	add("cert-manager issuer", "cert-manager.io", "certificaterequests", namespace, "", "create", "list", "watch")
	add("cert-manager issuer", "cert-manager.io", "certificaterequests", namespace, "x", "get", "delete")
	return out
}

type manifests struct {
	clusterRoles []rbacv1.ClusterRole
	roles        []rbacv1.Role
	crbs         []rbacv1.ClusterRoleBinding
	rbs          []rbacv1.RoleBinding
}

func load(t *testing.T) manifests {
	t.Helper()
	var k struct{ Resources []string }
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	var m manifests
	for _, f := range k.Resources {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var target any
			switch meta.Kind {
			case "ClusterRole":
				m.clusterRoles = append(m.clusterRoles, rbacv1.ClusterRole{})
				target = &m.clusterRoles[len(m.clusterRoles)-1]
			case "Role":
				m.roles = append(m.roles, rbacv1.Role{})
				target = &m.roles[len(m.roles)-1]
			case "ClusterRoleBinding":
				m.crbs = append(m.crbs, rbacv1.ClusterRoleBinding{})
				target = &m.crbs[len(m.crbs)-1]
			case "RoleBinding":
				m.rbs = append(m.rbs, rbacv1.RoleBinding{})
				target = &m.rbs[len(m.rbs)-1]
			case "ServiceAccount":
				continue
			default:
				t.Fatalf("%s: unexpected kind %q", f, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, target); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	return m
}

func boundToController(subjects []rbacv1.Subject) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == "ServiceAccount" && s.Name == "weft-controller" && s.Namespace == namespace
	})
}

// rules are the controller's rules that apply in ns ("" = cluster-wide).
func (m manifests) rules(ns string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, b := range m.crbs {
		if !boundToController(b.Subjects) || b.RoleRef.Kind != "ClusterRole" {
			continue
		}
		for _, r := range m.clusterRoles {
			if r.Name == b.RoleRef.Name {
				out = append(out, r.Rules...)
			}
		}
	}
	for _, b := range m.rbs {
		if !boundToController(b.Subjects) || b.Namespace != ns || b.RoleRef.Kind != "Role" {
			continue
		}
		for _, r := range m.roles {
			if r.Name == b.RoleRef.Name && r.Namespace == ns {
				out = append(out, r.Rules...)
			}
		}
	}
	return out
}

func has(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }

func allows(r rbacv1.PolicyRule, n need) bool {
	if !has(r.APIGroups, n.Group) || !has(r.Resources, n.Resource) || !has(r.Verbs, n.Verb) {
		return false
	}
	if len(r.ResourceNames) == 0 {
		return true
	}
	return n.Name != "" && slices.Contains(r.ResourceNames, n.Name)
}

func TestRBACCoversWhatTheCodeNeeds(t *testing.T) {
	m := load(t)
	if len(m.clusterRoles) == 0 || len(m.crbs) == 0 {
		t.Fatal("no ClusterRole bound to weft-system/weft-controller")
	}
	for _, n := range needs() {
		ns := n.Namespace
		if ns == "any" {
			ns = ""
		}
		if !slices.ContainsFunc(m.rules(ns), func(r rbacv1.PolicyRule) bool { return allows(r, n) }) {
			where := "cluster-wide"
			if ns != "" {
				where = "in " + ns
			}
			name := ""
			if n.Name != "" {
				name = " " + n.Name
			}
			t.Errorf("%s: weft-controller cannot %s %s%s %s (group %q)", n.Why, n.Verb, n.Resource, name, where, n.Group)
		}
	}
}

// TestRBACIsNarrow guards against rights creeping wider than the code
// needs: no wildcards, and Secrets and Leases only inside weft-system.
func TestRBACIsNarrow(t *testing.T) {
	m := load(t)
	for _, r := range m.rules("") {
		for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			if slices.Contains(list, "*") {
				t.Errorf("wildcard in cluster-wide rule %+v", r)
			}
		}
		if slices.Contains(r.Resources, "secrets") {
			t.Errorf("cluster-wide access to Secrets: %+v", r)
		}
		if slices.Contains(r.Resources, "leases") {
			// Leader election and the replicas' reports live in
			// weft-system; deleting Leases elsewhere would break other
			// controllers' leader election.
			t.Errorf("cluster-wide access to Leases: %+v", r)
		}
		if slices.Contains(r.Resources, "mutatingwebhookconfigurations") && len(r.ResourceNames) == 0 {
			t.Errorf("webhook configurations not limited by name: %+v", r)
		}
		if slices.Contains(r.Resources, "configmaps") && len(r.ResourceNames) == 0 && !slices.Equal(r.Verbs, []string{"create"}) {
			t.Errorf("ConfigMaps beyond create not limited to weft-root-ca: %+v", r)
		}
		for _, v := range r.Verbs {
			if strings.Contains("escalate bind impersonate", v) {
				t.Errorf("privilege verb %q in %+v", v, r)
			}
		}
	}
}
