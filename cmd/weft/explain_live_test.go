package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestExplainLive applies testdata/mesh/10-shop.yaml to the real API
// server (cluster IPs allocated by it; pod IPs written through the status
// subresource, as a kubelet would) and checks that `weft explain` without
// -f reads the cluster and reaches the same verdicts as with -f.
func TestExplainLive(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, _, err := offline.Load([]string{"testdata/mesh/10-shop.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	for _, o := range in.Namespaces {
		objs = append(objs, o)
	}
	for _, o := range in.Services {
		// The test API server allocates from its own range, single-stack.
		o.Spec.ClusterIP, o.Spec.ClusterIPs, o.Spec.IPFamilies, o.Spec.IPFamilyPolicy = "", nil, nil, nil
		objs = append(objs, o)
	}
	for _, o := range in.EndpointSlices {
		objs = append(objs, o)
	}
	for _, o := range in.AuthPolicies {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	for _, p := range in.Pods {
		status := p.Status
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status = status
		p.Status.PodIP = status.PodIPs[0].IP
		p.Status.Phase = corev1.PodRunning
		if err := env.Client.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	verdict := func(args ...string) string {
		t.Helper()
		cmd := explainCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SilenceErrors = true
		cmd.SetArgs(args)
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("weft explain %v: %v\n%s", args, err, out.String())
		}
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "Verdict: ") {
				return l
			}
		}
		t.Fatalf("weft explain %v: no verdict:\n%s", args, out.String())
		return ""
	}
	for _, c := range []struct{ args, want string }{
		{"--from shop/client-0 --to web.shop:80 --path /orders", "Verdict: DELIVERED to shop/web-0 port 8080 over mutual TLS"},
		{"--from shop/client-0 --to web.shop:80 --method DELETE", "Verdict: DENIED (HTTP 403) at shop/web-0 by AuthPolicy shop/no-deletes, spec.rules[0]"},
		{"--from shop/stranger-0 --to web.shop:80", "Verdict: REFUSED (HTTP 403) by the sidecar of shop/stranger-0, not forwarded"},
		{"--from shop/web-0 --to mysql.shop:3306 --protocol server-first", "Verdict: DELIVERED to shop/mysql-0 port 3306 over mutual TLS"},
	} {
		args := strings.Fields(c.args)
		live := verdict(append(args, "--kubeconfig", env.Kubeconfig)...)
		offline := verdict(append(args, "-f", "testdata/mesh/10-shop.yaml")...)
		if live != c.want || offline != c.want {
			t.Errorf("%s:\n live:    %s\n offline: %s\n want:    %s", c.args, live, offline, c.want)
		}
	}
}
