package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/webhook"
)

// TestInjectedAgentCommandLine: the command line the webhook gives
// weft-agent parses with `weft agent`'s own flags, and names the files
// the application is told about.
func TestInjectedAgentCommandLine(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter-0", Namespace: "shop", Labels: map[string]string{"app": "greeter"},
			Annotations: map[string]string{"weft.dev/proxyless": "grpc"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "greeter"}}},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
	out, report, err := webhook.Inject(pod, ns, nil, webhook.Options{XDSAddress: "weft.example:15012"})
	if err != nil || !report.Injected {
		t.Fatalf("Inject = %v, %v", report, err)
	}
	var agent *corev1.Container
	for i := range out.Spec.InitContainers {
		if out.Spec.InitContainers[i].Name == dataplane.AgentContainerName {
			agent = &out.Spec.InitContainers[i]
		}
	}
	if agent == nil || len(agent.Args) == 0 || agent.Args[0] != "agent" {
		t.Fatalf("no weft-agent running `weft agent` in %v", out.Spec.InitContainers)
	}
	cmd := agentCmd()
	if err := cmd.ParseFlags(agent.Args[1:]); err != nil {
		t.Fatalf("weft agent refuses the injected flags %q: %v", agent.Args[1:], err)
	}
	f := cmd.Flags()
	for flag, want := range map[string]string{
		"out":              webhook.GRPCCertDir,
		"bootstrap":        webhook.GRPCBootstrapFile,
		"xds-address":      "weft.example:15012",
		"grpc-xds-address": "", // the application's stream uses --xds-address too
		"labels":           "app=greeter",
	} {
		if got := f.Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	var bootstrapEnv string
	for _, e := range out.Spec.Containers[0].Env {
		if e.Name == webhook.EnvGRPCBootstrap {
			bootstrapEnv = e.Value
		}
	}
	if bootstrapEnv != f.Lookup("bootstrap").Value.String() {
		t.Fatalf("the application reads its bootstrap from %q, the agent writes %q", bootstrapEnv, f.Lookup("bootstrap").Value.String())
	}
}
