package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
)

// caCmd is `weft ca`: the built-in CA's root, and its rotation.
func caCmd() *cobra.Command {
	var kubeconfig, namespace string
	cmd := &cobra.Command{
		Use:          "ca",
		Short:        "Show or rotate the built-in CA's root",
		SilenceUsage: true,
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	cmd.PersistentFlags().StringVar(&namespace, "namespace", "weft-system", "namespace of weft-controller and the root CA Secret")
	connect := func() (client.Client, error) { return newClient(kubeconfig) }

	var wait bool
	var timeout time.Duration
	rotate := &cobra.Command{
		Use:   "rotate-root",
		Short: "Rotate the built-in CA's root without a failed request",
		Long: `weft ca rotate-root raises MeshConfig weft's
spec.certificates.builtIn.rootGeneration by one. weft-controller then makes a
new root and moves to it in stages, each waiting until every connected proxy
has ACKed it: AddNewRoot (every bundle trusts both roots), SwitchSigning
(every workload certificate is re-issued from the new root), RetireOldRoot
(the old root leaves every bundle; its key is deleted). With --wait, it
prints each phase and returns when the new root is the only one.

If MeshConfig is kept in Git (Argo CD, Flux), raise the field there instead:
the field only increases, so a sync that would lower it is refused.`,
		Example: "  weft ca rotate-root --wait\n  weft ca status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			gen, err := rootrotation.Request(ctx, c, namespace)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "root rotation to generation %d requested (MeshConfig %s spec.certificates.builtIn.rootGeneration: %d)\n", gen, v1alpha1.MeshConfigName, gen)
			if !wait {
				fmt.Fprintln(out, "follow it with: weft ca status, or kubectl get meshconfig weft -o wide")
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return rootrotation.Wait(ctx, c, gen, func(p rootrotation.Progress) { printProgress(out, p) })
		},
	}
	rotate.Flags().BoolVar(&wait, "wait", false, "wait until the new root is the only root, printing each phase")
	rotate.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait: give up after this long (the rotation goes on)")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the root in effect and any rotation in progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			p, err := rootrotation.Get(cmd.Context(), c)
			if err != nil {
				return err
			}
			printStatus(cmd.OutOrStdout(), p)
			return nil
		},
	}
	cmd.AddCommand(rotate, status)
	return cmd
}

func printProgress(out io.Writer, p rootrotation.Progress) {
	fmt.Fprintf(out, "%s  %-13s %s\n", time.Now().Format("15:04:05"), p.Status.Phase, rootrotation.Describe(p))
}

func printStatus(out io.Writer, p rootrotation.Progress) {
	s := p.Status
	fmt.Fprintf(out, "Phase:            %s\n", s.Phase)
	fmt.Fprintf(out, "Root generation:  %d\n", s.RootGeneration)
	if s.CurrentRoot != nil {
		fmt.Fprintf(out, "Root:             sha256 %s, expires %s\n", s.CurrentRoot.SHA256, s.CurrentRoot.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.NextRoot != nil {
		fmt.Fprintf(out, "Incoming root:    sha256 %s, expires %s (generation %d)\n", s.NextRoot.SHA256, s.NextRoot.NotAfter.UTC().Format(time.RFC3339), s.TargetGeneration)
	}
	if s.PhaseSince != nil {
		fmt.Fprintf(out, "Phase since:      %s\n", s.PhaseSince.UTC().Format(time.RFC3339))
	}
	if s.WaitingFor != "" {
		fmt.Fprintf(out, "Waiting for:      %s\n", s.WaitingFor)
	}
	if c := p.Condition; c != nil {
		fmt.Fprintf(out, "Condition:        %s=%s (%s): %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
}

func newClient(kubeconfig string) (client.Client, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return clientFor(cfg)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no cluster to talk to: pass --kubeconfig or set $KUBECONFIG: %w", err)
	}
	return cfg, nil
}

func clientFor(cfg *rest.Config) (client.Client, error) {
	// controller-runtime's client logs nothing a user needs; without a
	// logger it prints a warning with a stack trace after 30 s.
	ctrllog.SetLogger(logr.Discard())
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(gatewayv1.Install(scheme))
	utilruntime.Must(gatewayv1beta1.Install(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}
