package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/internal/cli/install"
	"github.com/weftmesh/weft/internal/version"
)

// installCmd is `weft install`: the install manifests, for kubectl apply.
func installCmd() *cobra.Command {
	var (
		o                install.Options
		requests, limits string
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print weft's install manifests (for kubectl apply), with options",
		Long: `weft install prints the objects that install weft — CRDs, the weft-system
namespace, RBAC, weft-controller (Deployment, Services, PodDisruptionBudget)
and the injection webhook — for kubectl apply. It changes nothing itself.
With no flag it prints exactly what config/default holds (this build's copy,
rendered by kustomize); each flag changes what its kustomize component or
Helm value changes:

  --image, --init-image,    weft-controller's image; the weft-init, weft agent
  --agent-image,            and Envoy images it injects (default: those of its
  --proxy-image             own version, and Envoy's pinned release)
  --replicas                weft-controller replicas (2: the webhook fails
                            closed, so one must survive a node drain)
  --requests, --limits      weft-controller's resources, as kubectl set
                            resources takes them (cpu=500m,memory=512Mi)
  --webhook-cert-manager    the webhook's certificate from cert-manager
                            (config/components/webhook-cert-manager)
  --plaintext-xds           the anonymous plaintext xDS port 15010, off by
                            default (config/components/plaintext-xds; only
                            with a NetworkPolicy: docs/design/070)
  --pod-monitors            Prometheus Operator PodMonitors for the controller
                            and every sidecar (config/components/monitoring)

Apply with --server-side: the CRDs are too large for kubectl's client-side
last-applied annotation. Run weft check --pre before and weft check after.`,
		Example: `  weft check --pre && weft install | kubectl apply --server-side -f -
  weft install --replicas 3 --requests cpu=500m,memory=512Mi --limits memory=2Gi > weft.yaml
  weft install --image registry.example.com/weft-controller:v0.1.0 --init-image registry.example.com/weft-init:v0.1.0
  weft install --webhook-cert-manager --pod-monitors | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cmd.Flags().Changed("requests") {
				if o.Requests, err = install.ParseResources("requests", requests); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("limits") {
				if o.Limits, err = install.ParseResources("limits", limits); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("replicas") && o.Replicas < 1 {
				return &install.Error{Flag: "replicas", Value: fmt.Sprint(o.Replicas), Problem: "weft-controller needs at least one replica", Fix: "give 2 or more (the webhook fails closed: one replica must survive a node drain)"}
			}
			if o.Replicas == 1 {
				fmt.Fprintln(cmd.ErrOrStderr(), "weft install: --replicas 1: while that replica restarts or its node drains, pods in injected namespaces cannot be created (the webhook fails closed); 2 or more survive a drain")
			}
			var used []string
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Value.Type() == "bool" {
					used = append(used, "--"+f.Name)
				} else {
					used = append(used, "--"+f.Name+" "+f.Value.String())
				}
			})
			header := strings.Join(append([]string{"weft install"}, used...), " ")
			header += fmt.Sprintf(" (weft %s): kubectl apply --server-side -f FILE", version.Version)
			out, err := install.Render(o, header)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", "", "weft-controller's image, REPOSITORY:TAG or @sha256:DIGEST (default: config/default's)")
	f.StringVar(&o.InitImage, "init-image", "", "the weft-init image weft-controller injects (default: its own version's)")
	f.StringVar(&o.AgentImage, "agent-image", "", "the image running weft agent that weft-controller injects beside proxyless gRPC applications (default: its own version's)")
	f.StringVar(&o.ProxyImage, "proxy-image", "", "the sidecar's Envoy image when MeshConfig names none (default: Envoy's pinned release)")
	f.IntVar(&o.Replicas, "replicas", 0, "weft-controller replicas (default: 2)")
	f.StringVar(&requests, "requests", "", "weft-controller's resource requests, such as cpu=500m,memory=512Mi (each named one replaces the default: cpu=200m,memory=256Mi)")
	f.StringVar(&limits, "limits", "", "weft-controller's resource limits, such as memory=2Gi (each named one replaces the default: memory=1Gi)")
	f.BoolVar(&o.WebhookCertManager, "webhook-cert-manager", false, "the webhook's serving certificate from cert-manager (which must be installed) instead of weft's own webhook CA")
	f.BoolVar(&o.PlaintextXDS, "plaintext-xds", false, "turn on the anonymous plaintext xDS port 15010 (anyone who reaches it can read any identity's configuration: only with a NetworkPolicy)")
	f.BoolVar(&o.PodMonitors, "pod-monitors", false, "add Prometheus Operator PodMonitors for weft-controller and every sidecar (the Operator's CRDs must be installed)")
	return cmd
}
