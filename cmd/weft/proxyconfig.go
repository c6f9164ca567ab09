package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/internal/cli/proxystatus"
)

// proxyConfigCmd is `weft proxy-config`: what weft-controller last sent a
// proxy.
func proxyConfigCmd() *cobra.Command {
	var (
		kubeconfig, namespace, out string
		addresses                  []string
		stream                     uint64
	)
	types := make([]string, 0, len(proxystatus.ConfigTypes))
	for t := range proxystatus.ConfigTypes {
		types = append(types, t)
	}
	sort.Strings(types)
	cmd := &cobra.Command{
		Use:   "proxy-config NAMESPACE/POD [" + strings.Join(types, "|") + "|all]",
		Short: "Show the configuration weft-controller last sent a connected proxy",
		Long: `weft proxy-config prints the xDS resources weft-controller last built for a
connected proxy (its /debug/config_dump; secrets by name and version only,
never their keys), from whichever weft-controller replica the proxy is
connected to — reached by port-forward, or at --address. Compare it with
'weft translate -f ... --proxy NAMESPACE/POD', which shows what the
manifests give, and with 'weft proxy-status', which says whether the proxy
accepted it.`,
		Example: `  weft proxy-config shop/web-0 routes
  weft proxy-config shop/web-0 -o json --address 127.0.0.1:15014`,
		Args:         cobra.RangeArgs(1, 2),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, pod, ok := strings.Cut(args[0], "/")
			if !ok || ns == "" || pod == "" {
				return fmt.Errorf("%q: name the proxy as NAMESPACE/POD", args[0])
			}
			typ := "all"
			if len(args) == 2 {
				typ = args[1]
			}
			if _, ok := proxystatus.ConfigTypes[typ]; !ok && typ != "all" {
				return fmt.Errorf("type %q: want one of %s or all", typ, strings.Join(types, ", "))
			}
			nodeID := pod + "." + ns
			ctx := cmd.Context()
			var dump map[string][]json.RawMessage
			try := func(base string) error {
				d, err := proxystatus.ConfigDump(ctx, http.DefaultClient, base, nodeID, stream)
				dump = d
				return err
			}
			var errs []error
			if len(addresses) > 0 {
				for _, a := range addresses {
					if !strings.Contains(a, "://") {
						a = "http://" + a
					}
					if err := try(a); err == nil {
						break
					} else if !errors.Is(err, proxystatus.ErrNotConnected) {
						errs = append(errs, fmt.Errorf("%s: %w", a, err))
					}
				}
			} else {
				cfg, err := restConfig(kubeconfig)
				if err != nil {
					return err
				}
				c, err := clientFor(cfg)
				if err != nil {
					return err
				}
				pods, err := proxystatus.ControllerPods(ctx, c, namespace)
				if err != nil {
					return err
				}
				for _, p := range pods {
					if err := proxystatus.WithPortForward(ctx, cfg, namespace, p, try); err == nil {
						break
					} else if !errors.Is(err, proxystatus.ErrNotConnected) {
						errs = append(errs, fmt.Errorf("%s: %w", p, err))
					}
				}
			}
			if dump == nil {
				if len(errs) > 0 {
					return errors.Join(errs...)
				}
				return fmt.Errorf("proxy %s (node %s) is connected to no weft-controller replica: weft proxy-status lists the connected ones", args[0], nodeID)
			}
			view := map[string][]json.RawMessage{}
			for name, t := range proxystatus.ConfigTypes {
				if typ == "all" || typ == name {
					if rs := dump[t]; len(rs) > 0 {
						view[name] = rs
					} else {
						view[name] = []json.RawMessage{}
					}
				}
			}
			b, err := offline.Encode(view, out)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&namespace, "namespace", "weft-system", "namespace of weft-controller")
	f.StringSliceVar(&addresses, "address", nil, "read this weft-controller debug address (host:port; repeatable) instead of port-forwarding to every replica")
	f.Uint64Var(&stream, "stream", 0, "the stream number (from weft proxy-status) when the pod has several with different configurations")
	f.StringVarP(&out, "output", "o", offline.OutputYAML, "output format: yaml or json")
	return cmd
}
