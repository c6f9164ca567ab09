// Command weft is the command-line tool for operating a weft mesh.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/webhook"
)

func main() {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Operate a weft service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print weft's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "weft", version.Get().String())
		},
	})
	root.AddCommand(injectCmd())
	root.AddCommand(agentCmd())
	root.AddCommand(caCmd())
	root.AddCommand(installCmd())
	root.AddCommand(checkCmd())
	root.AddCommand(translateCmd())
	root.AddCommand(proxyStatusCmd())
	root.AddCommand(proxyConfigCmd())
	root.AddCommand(explainCmd())
	root.AddCommand(statCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "weft: %v\n", err)
		os.Exit(1)
	}
}

// injectCmd is `weft inject`: the webhook's injection, offline.
func injectCmd() *cobra.Command {
	var (
		file, meshConfig string
		o                webhook.Options
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE",
		Short: "Add the weft sidecar to the workloads in a manifest, as the webhook would",
		Long: `weft inject reads Kubernetes manifests (Pods, Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs, CronJobs) and prints them with weft's sidecar
injected, for clusters without the webhook or to review what it will do.
Every workload is injected as if its namespace were labelled
weft.dev/inject=enabled; pod annotations apply. Other objects pass through.`,
		Example: "  weft inject -f deploy.yaml | kubectl apply -f -\n  kubectl get deploy web -o yaml | weft inject -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := readInput(cmd.InOrStdin(), file)
			if err != nil {
				return err
			}
			var mc *v1alpha1.MeshConfig
			if meshConfig != "" {
				data, err := os.ReadFile(meshConfig)
				if err != nil {
					return err
				}
				objs, err := webhook.DecodeYAML(data)
				if err != nil || len(objs) != 1 {
					return fmt.Errorf("--meshconfig %s: want one MeshConfig (%v)", meshConfig, err)
				}
				var ok bool
				if mc, ok = objs[0].(*v1alpha1.MeshConfig); !ok {
					return fmt.Errorf("--meshconfig %s holds a %T, not a MeshConfig", meshConfig, objs[0])
				}
			}
			out, notes, err := webhook.InjectManifests(in, mc, o)
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), n)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifest to inject; - reads standard input")
	f.StringVar(&meshConfig, "meshconfig", "", "a MeshConfig file for the sidecar's image and resources (default: MeshConfig's defaults)")
	f.BoolVar(&o.LegacySidecar, "legacy-sidecar", false, "inject a regular container instead of a native sidecar (API servers before 1.29)")
	f.BoolVar(&o.NoSleepAction, "no-sleep-action", false, "with --legacy-sidecar: no preStop sleep (API servers before 1.30)")
	f.StringVar(&o.InitImage, "init-image", webhook.DefaultInitImage, "weft-init image")
	f.StringVar(&o.AgentImage, "agent-image", webhook.DefaultAgentImage, "image running `weft agent` in proxyless gRPC pods (weft.dev/proxyless: grpc)")
	f.StringVar(&o.XDSAddress, "xds-address", "", "host:port of weft-controller's xDS server over TLS (default weft-controller.weft-system.svc:15012)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func readInput(stdin io.Reader, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(file)
}
