package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/internal/cli/live"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/translator"
)

// explainCmd is `weft explain`: one request walked through the traffic
// simulator over what weft-controller would configure.
func explainCmd() *cobra.Command {
	var (
		files              []string
		kubeconfig         string
		from, to, protocol string
		path, method, host string
		headers            []string
		ipv6               bool
	)
	cmd := &cobra.Command{
		Use:   "explain [-f FILE|FOLDER] --from NAMESPACE/POD --to HOST:PORT",
		Short: "Walk one request through the mesh, hop by hop, and say why it is delivered or refused",
		Long: `weft explain answers "why was my call denied?" (or "where does it go?").
It translates the manifests (with -f) or the cluster's current objects
(without: Namespaces, Services, EndpointSlices, Pods, weft's policies,
HTTPRoutes, GRPCRoutes, ReferenceGrants and MeshConfig, read once through
--kubeconfig) as 'weft translate' does, builds every meshed pod's sidecar
configuration and traffic-capture rules, and walks one request from the
caller's application through its iptables rules, its sidecar's
listener, filter chain, route and cluster, the network (kube-proxy), the
destination's capture rules and sidecar (TLS, AuthPolicy) to the destination
application. It prints each hop and the verdict: delivered (over mutual TLS,
and as which identity), denied (by which AuthPolicy rule), no route, no
endpoints, TLS failure, refused, reset or loop.

--to is a Service name (NAME.NAMESPACE or NAME.NAMESPACE.svc.cluster.local),
a cluster IP or a pod IP, with the port the application dials. The walk is
deterministic: a split is shown with its weights and the heaviest backend is
followed; kube-proxy picks the first endpoint.`,
		Example: `  weft explain -f mesh/ --from shop/client-0 --to web.shop:80 --method DELETE --path /orders/1
  weft explain -f mesh/ --from shop/web-0 --to mysql.shop:3306 --protocol server-first
  weft explain -f mesh/ --from shop/client-0 --to web.shop:80 --ipv6
  weft explain --from shop/client-0 --to web.shop:80     # the live cluster`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, ok := offline.Protocols[protocol]
			if !ok {
				return fmt.Errorf("--protocol %q: want one of %s", protocol, strings.Join(offline.ProtocolNames(), ", "))
			}
			call := sim.Call{From: from, To: to, IPv6: ipv6, Protocol: p, Method: method, Path: path, Host: host}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok || k == "" {
					return fmt.Errorf("--header %q: want NAME=VALUE", h)
				}
				if call.Headers == nil {
					call.Headers = map[string]string{}
				}
				call.Headers[strings.ToLower(k)] = v
			}
			var (
				in    *translator.Inputs
				notes []string
				err   error
			)
			if len(files) > 0 {
				in, notes, err = offline.Load(files, cmd.InOrStdin())
			} else {
				var c client.Client
				if c, err = newClient(kubeconfig); err == nil {
					in, notes, err = live.Inputs(cmd.Context(), c)
				}
			}
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			e, err := offline.Explain(in, call)
			if err != nil {
				return err
			}
			e.Print(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "manifest file or folder (repeatable); - reads standard input; without -f, the cluster's objects are read")
	f.StringVar(&from, "from", "", "the calling pod: NAMESPACE/POD")
	f.StringVar(&to, "to", "", "where the application connects: HOST:PORT (a Service's DNS name, a cluster IP or a pod IP; IPv6 in brackets)")
	f.StringVar(&protocol, "protocol", "http", "what the application speaks: "+strings.Join(offline.ProtocolNames(), ", "))
	f.StringVar(&method, "method", "GET", "HTTP method")
	f.StringVar(&path, "path", "/", "HTTP path (with the query, if any)")
	f.StringVar(&host, "host", "", "HTTP Host header (default: --to)")
	f.StringArrayVarP(&headers, "header", "H", nil, "HTTP request header NAME=VALUE (repeatable)")
	f.BoolVar(&ipv6, "ipv6", false, "connect over IPv6 (the name's IPv6 address)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "without -f: the cluster to read (default: $KUBECONFIG, then ~/.kube/config)")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
