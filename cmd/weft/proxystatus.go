package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/cli/proxystatus"
)

// fromAddresses reads /debug/proxies at each debug address given
// (host:port or a URL); one that does not answer is reported in its
// Replica.
func fromAddresses(ctx context.Context, addresses []string) []proxystatus.Replica {
	var rs []proxystatus.Replica
	for _, a := range addresses {
		base := a
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		ps, err := proxystatus.Fetch(ctx, http.DefaultClient, base)
		rs = append(rs, proxystatus.Replica{Name: a, Proxies: ps, Err: err})
	}
	return rs
}

// proxyStatusCmd is `weft proxy-status`: every connected proxy, per xDS
// type SYNCED, STALE or NACKED, over every weft-controller replica.
func proxyStatusCmd() *cobra.Command {
	var (
		kubeconfig, namespace string
		addresses             []string
	)
	cmd := &cobra.Command{
		Use:   "proxy-status",
		Short: "Show every connected proxy and whether it accepted its configuration",
		Long: fmt.Sprintf(`weft proxy-status asks every weft-controller replica which proxies are
connected to it (its /debug/proxies, on port %d of the pod's localhost,
reached through a port-forward like 'kubectl port-forward') and prints, per
proxy stream and xDS type (CDS, EDS, LDS, RDS, SDS), SYNCED (holds the
newest configuration), STALE (sent, not answered yet) or NACKED (rejected;
the proxy keeps its last good configuration), with the acknowledged and sent
generations, then every rejection with the proxy's own reason.

With --address, it reads the given debug addresses instead (a
port-forward you run yourself, or 'make run''s local controller).`, proxystatus.DebugPort),
		Example: `  weft proxy-status
  kubectl -n weft-system port-forward deploy/weft-controller 15014 &
  weft proxy-status --address 127.0.0.1:15014`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rs []proxystatus.Replica
			if len(addresses) > 0 {
				rs = fromAddresses(cmd.Context(), addresses)
			} else {
				cfg, err := restConfig(kubeconfig)
				if err != nil {
					return err
				}
				c, err := clientFor(cfg)
				if err != nil {
					return err
				}
				if rs, err = proxystatus.FromReplicas(cmd.Context(), cfg, c, namespace); err != nil {
					return err
				}
			}
			proxystatus.Print(cmd.OutOrStdout(), rs)
			failed := 0
			for _, r := range rs {
				if r.Err != nil {
					failed++
				}
			}
			if failed == len(rs) {
				return fmt.Errorf("no weft-controller replica answered")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&namespace, "namespace", "weft-system", "namespace of weft-controller")
	f.StringSliceVar(&addresses, "address", nil, "read this weft-controller debug address (host:port; repeatable) instead of port-forwarding to every replica")
	return cmd
}
