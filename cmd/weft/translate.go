package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/cli/offline"
)

// translateCmd is `weft translate`: weft-controller's translation, offline.
func translateCmd() *cobra.Command {
	var (
		files           []string
		proxy, out, typ string
	)
	cmd := &cobra.Command{
		Use:   "translate -f FILE|FOLDER",
		Short: "Show the xDS each proxy would receive, and every policy's status, from manifests on disk",
		Long: `weft translate reads Kubernetes and weft manifests (Namespaces, Services,
EndpointSlices, Pods, TrafficSplits, HTTPRoutes, GRPCRoutes, ReferenceGrants,
RetryPolicies, AuthPolicies, MeshConfig) and translates them exactly as weft-controller does, without a
cluster: every policy's status (Accepted, ResolvedRefs; Programmed needs
connected proxies and is not shown) and, for every meshed pod (a pod with the
weft-proxy container, or annotated weft.dev/proxyless: grpc), the listeners,
routes, clusters and endpoints weft-controller would send it, after the same
validation. Use it to review a change before applying it, and in CI.

A folder is read recursively (*.yaml, *.yml, *.json); a List from
'kubectl get -o yaml' is read item by item. A workload (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) whose pods are not among
the manifests is read as one pod, NAME-0, of its template, injected as the
webhook would (a Namespace missing from the manifests counts as labelled
weft.dev/inject=enabled); it has no IP, so it is no Service's endpoint.
Kinds the translator does not read (ServiceAccounts, ConfigMaps, ...) are
skipped with a note on standard error. An object that does not decode is an error naming the
file, the document, the object and the field.`,
		Example: `  weft translate -f mesh/
  weft translate -f mesh.yaml --proxy shop/web-0 --type routes
  kubectl get svc,endpointslices,pods,trafficsplits,authpolicies -A -o yaml | weft translate -f - -o json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(offline.Types, typ) {
				return fmt.Errorf("--type %q: want one of %s", typ, strings.Join(offline.Types, ", "))
			}
			in, notes, err := offline.Load(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			r, err := offline.Translate(in, proxy, typ)
			if err != nil {
				return err
			}
			b, err := offline.Encode(r, out)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "manifest file or folder (repeatable); - reads standard input")
	f.StringVar(&proxy, "proxy", "", "show only this meshed pod's configuration (NAMESPACE/POD), or its ServiceAccount's pods' (NAMESPACE/SERVICEACCOUNT)")
	f.StringVarP(&out, "output", "o", offline.OutputYAML, "output format: yaml or json")
	f.StringVar(&typ, "type", offline.TypeAll, "xDS type to show: "+strings.Join(offline.Types, ", "))
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}
