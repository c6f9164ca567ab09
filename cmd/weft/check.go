package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/internal/cli/check"
	"github.com/weftmesh/weft/internal/cli/proxystatus"
	"github.com/weftmesh/weft/internal/controller/injectcheck"
)

// checkCmd is `weft check`: is weft installed and healthy in this cluster.
func checkCmd() *cobra.Command {
	var kubeconfig, namespace, probeNamespace string
	var addresses []string
	var pre, certManager, webhookCertManager, podMonitors bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that weft is installed and healthy, and say how to fix what is not",
		Long: `weft check reads the cluster (it changes nothing) and prints one line per
check, ✔ when it passes, ! for a warning and ✖ for a failure, each failure
and warning with the command that fixes it:

  Kubernetes API        reachable, and new enough for native sidecars
  CRDs                  every weft kind served at mesh.weft.dev/v1alpha1
  weft-controller       its Deployment available (two replicas advised)
  Injection webhook     registered, with a caBundle, its Service has ready
                        endpoints (it fails closed), and it injects a pod
                        labelled weft.dev/inject=true created as a
                        server-side dry run in --probe-namespace (the API
                        server's own error when it cannot call it)
  MeshConfig            valid as weft-controller reads it; no blocked root
                        rotation
  Root CA               the built-in root has 30 days or more left (warns
                        under 180)
  Injection namespaces  at least one labelled weft.dev/inject=enabled
  Sidecars              no pod in those namespaces started without its
                        sidecar
  Connected proxies     every running pod with weft's sidecar, and every
                        proxyless pod, has an xDS stream to a
                        weft-controller replica (what weft proxy-status
                        reads, through a port-forward; --address instead)
  Workload certificates no replica serves a certificate near its expiry
                        (renewal failing) or has failed to issue one (a
                        warning), from each replica's /metrics through
                        the API server's pod proxy
  Policies              every TrafficSplit, RetryPolicy,
                        BackendTrafficPolicy, RateLimitPolicy and
                        AuthPolicy, and every mesh HTTPRoute and
                        GRPCRoute (a Service parent; weft's parent
                        status), Accepted, ResolvedRefs and Programmed for
                        its current generation

With --pre it checks instead that weft can be installed, before it is:

  Kubernetes API        reachable, and new enough for native sidecars
  Permissions           you may create every kind config/default holds, and
                        those the options below add (Issuer, Certificate;
                        PodMonitor) in the install's namespace
  Earlier install       none, or what applying again would upgrade
  Other meshes          no other mesh's sidecar injector registered
  cert-manager          (with --cert-manager or --webhook-cert-manager)
                        the kinds the install asks of it are served
  Prometheus Operator   (with --pod-monitors) PodMonitor is served

The exit code is 1 when any check fails.`,
		Example:      "  weft check --pre                 # before installing\n  weft check                       # after\n  weft check --kubeconfig ~/.kube/staging",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			c, err := clientFor(cfg)
			if err != nil {
				return err
			}
			d, err := discovery.NewDiscoveryClientForConfig(cfg)
			if err != nil {
				return err
			}
			if certManager && !pre {
				return fmt.Errorf("--cert-manager goes with --pre (after the install, weft check reads the provider from MeshConfig)")
			}
			if (webhookCertManager || podMonitors) && !pre {
				return fmt.Errorf("--webhook-cert-manager and --pod-monitors go with --pre: give the install options you will install with")
			}
			var rs []check.Result
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			if pre {
				rs = check.RunPre(cmd.Context(), c, d, check.PreOptions{Namespace: namespace, CertManager: certManager,
					WebhookCertManager: webhookCertManager, PodMonitors: podMonitors})
			} else {
				rs = check.Run(cmd.Context(), c, d, check.Options{Namespace: namespace, ProbeNamespace: probeNamespace, MissingSidecar: missingSidecar,
					Proxies: func(ctx context.Context) ([]proxystatus.Replica, error) {
						if len(addresses) > 0 {
							return fromAddresses(ctx, addresses), nil
						}
						return proxystatus.FromReplicas(ctx, cfg, c, namespace)
					},
					REST: cs.CoreV1().RESTClient()})
			}
			check.Print(cmd.OutOrStdout(), rs)
			if n := check.Failed(rs); n > 0 {
				return fmt.Errorf("%d of %d checks failed", n, len(rs))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	cmd.Flags().StringVar(&namespace, "namespace", check.DefaultNamespace, "namespace of weft-controller")
	cmd.Flags().StringVar(&probeNamespace, "probe-namespace", check.DefaultProbeNamespace, "namespace of the webhook probe's dry-run pod (nothing is stored); any namespace weft does not exclude")
	cmd.Flags().StringSliceVar(&addresses, "address", nil, "read this weft-controller debug address (host:port; repeatable) for the connected proxies instead of port-forwarding to every replica")
	cmd.Flags().BoolVar(&pre, "pre", false, "check that weft can be installed (before installing it)")
	cmd.Flags().BoolVar(&certManager, "cert-manager", false, "with --pre: the install will use cert-manager for workload certificates")
	cmd.Flags().BoolVar(&webhookCertManager, "webhook-cert-manager", false, "with --pre: the install will take the webhook's certificate from cert-manager (weft install --webhook-cert-manager): may you create its Issuers and Certificate, and does cert-manager serve them")
	cmd.Flags().BoolVar(&podMonitors, "pod-monitors", false, "with --pre: the install will add Prometheus Operator PodMonitors (weft install --pod-monitors): may you create them, and are they served")
	return cmd
}

// missingSidecar is weft-controller's own injection check.
func missingSidecar(pod *corev1.Pod, ns *corev1.Namespace) (bool, string) {
	if injectcheck.Check(pod, ns) != injectcheck.Missing {
		return false, ""
	}
	return true, injectcheck.RestartHint(pod)
}
