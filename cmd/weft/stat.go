package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/internal/cli/stat"
)

// statCmd is `weft stat`: requests per second, success rate, latency and
// TCP connections per Service, Deployment or pod, from the sidecars'
// statistics.
func statCmd() *cobra.Command {
	var (
		kubeconfig, namespace, output string
		allNamespaces, watch          bool
		interval                      time.Duration
		urls, splitFiles              []string
		promURL                       string
		window                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stat [svc|deploy|pod] [NAME]",
		Short: "Show requests per second, success rate, latency and TCP connections per Service, Deployment or pod",
		Long: fmt.Sprintf(`weft stat reads every weft sidecar's statistics twice, --interval apart,
and prints what they counted in between:

  SUCCESS   responses that were not 5xx, of all responses
  RPS       requests per second (a retry is another request)
  P50 P95 P99   latency percentiles, from Envoy's latency histogram
            (interpolated in a bucket as Prometheus' histogram_quantile does)
  TCP       open connections
  SPLIT     a TrafficSplit backend's share of the split's requests, and
  WEIGHT    its share of the split's weights (one TrafficSplit, no matches)

svc (the default) shows the calls made to each Service, as the callers'
sidecars counted them, with a TrafficSplit's backends under its root
Service; it reads the sidecars of every namespace (callers may be anywhere;
only those of -n when you may not list pods cluster-wide) and shows the
Services of -n (default: the kubeconfig's namespace) or of all with -A.
deploy and pod show the calls each Deployment's or pod's sidecars
delivered to their application, read from the pods of -n (or -A).

Sidecars are read through the API server's pod proxy
(/api/v1/namespaces/NS/pods/POD:%d/proxy%s): you need get on
pods/proxy. With --metrics-url, weft stat reads those URLs instead
(Prometheus text with Envoy's cluster series: a port-forwarded sidecar, or
the proxyless workloads 'make run' starts) and TrafficSplits from the
cluster if one is configured, or from --splits manifests.
With --prometheus URL, the same numbers come from a Prometheus server that
scrapes the sidecars (rate() over --window, default 1m; svc and pod).
Services nobody called in the window are left out unless named.
docs/metrics.md describes the series read.`, dataplane.StatsPort, dataplane.StatsPath),
		Example: `  weft stat                                   # Services of the current namespace, over 1 s
  weft stat svc checkout -n shop --watch      # one Service and its split's backends, redrawn every second
  weft stat deploy -A -o wide                 # every meshed Deployment, with ports and sources
  weft stat pod web-0 -n shop --interval 10s
  weft stat -o json -n shop                   # the same numbers for scripts
  weft stat --metrics-url http://127.0.0.1:9101/metrics --metrics-url http://127.0.0.1:9102/metrics
  weft stat svc -n shop --prometheus http://prometheus.monitoring:9090 --window 5m
  kubectl -n shop port-forward web-0 15090 & weft stat --metrics-url http://127.0.0.1:15090/stats/prometheus --splits canary.yaml`,
		Args:         cobra.MaximumNArgs(2),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := statArgs(args)
			if err != nil {
				return err
			}
			if output != stat.FormatTable && output != stat.FormatWide && output != stat.FormatJSON {
				return fmt.Errorf("-o %s: use wide or json (or nothing, for the table)", output)
			}
			if interval <= 0 {
				return fmt.Errorf("--interval %s: must be positive", interval)
			}
			if allNamespaces && cmd.Flags().Changed("namespace") {
				return errors.New("-n and -A: choose one")
			}
			ctx := cmd.Context()
			var staticSplits []stat.Split
			if len(splitFiles) > 0 {
				in, _, err := offline.Load(splitFiles, cmd.InOrStdin())
				if err != nil {
					return err
				}
				var ts []v1alpha1.TrafficSplit
				for _, t := range in.TrafficSplits {
					ts = append(ts, *t)
				}
				staticSplits = stat.SplitsFrom(ts)
			}
			live := stat.Live{Interval: interval, Options: stat.Options{Kind: kind, Name: name, Splits: staticSplits}}
			var notes []string
			if promURL != "" && len(urls) > 0 {
				return errors.New("--prometheus and --metrics-url: choose one")
			}
			if promURL != "" {
				p := stat.Prometheus{URL: promURL, Window: window}
				live.Query = func(ctx context.Context) ([]stat.Source, error) { return p.Sources(ctx, kind) }
			}
			if len(urls) > 0 || promURL != "" {
				if len(urls) > 0 {
					live.Scraper = stat.URLs{URLs: urls}
				}
				if !allNamespaces {
					live.Options.Namespace = namespace // every namespace unless -n
				}
				if len(splitFiles) == 0 {
					if cfg, err := restConfig(kubeconfig); err != nil {
						notes = append(notes, "no cluster to read TrafficSplits from: a split's backends show as Services (--splits FILE reads them from manifests)")
					} else if c, err := clientFor(cfg); err == nil {
						live.Splits = splitReader(c)
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
				cs, err := kubernetes.NewForConfig(cfg)
				if err != nil {
					return err
				}
				ns := ""
				if !allNamespaces {
					if ns = namespace; ns == "" {
						if ns, err = contextNamespace(kubeconfig); err != nil {
							return err
						}
					}
				}
				live.Options.Namespace = ns
				pods := ns
				if kind == stat.Services && ns != "" {
					// The callers of a Service may be in any namespace.
					pods = ""
					if err := c.List(ctx, &corev1.PodList{}, client.Limit(1)); apierrors.IsForbidden(err) {
						pods = ns
						notes = append(notes, fmt.Sprintf("only the callers in %s were read: you may not list pods in every namespace", ns))
					}
				}
				live.Scraper = stat.Sidecars{Client: c, REST: cs.CoreV1().RESTClient(), Namespace: pods}
				if len(splitFiles) == 0 {
					live.Splits = splitReader(c)
				}
			}
			out := cmd.OutOrStdout()
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if watch {
				ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				return live.Watch(ctx, out, output, "weft "+strings.Join(statTitle(cmd, args), " "))
			}
			t, err := live.Once(ctx)
			if err != nil {
				return err
			}
			if err := stat.Render(out, t, output); err != nil {
				return err
			}
			if t.Sources == 0 {
				return errors.New("no source could be read")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVarP(&namespace, "namespace", "n", "", "namespace to show (default: the kubeconfig's; with --metrics-url, every one)")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "show every namespace")
	f.DurationVar(&interval, "interval", time.Second, "time between the two reads (and between redraws with --watch)")
	f.BoolVarP(&watch, "watch", "w", false, "redraw every --interval until interrupted")
	f.StringVarP(&output, "output", "o", "", "wide (with ports and sources) or json")
	f.StringArrayVar(&urls, "metrics-url", nil, "read Prometheus text from this URL instead of the sidecars (repeatable)")
	f.StringVar(&promURL, "prometheus", "", "read rates from this Prometheus server (rate() over --window) instead of the sidecars")
	f.DurationVar(&window, "window", time.Minute, "with --prometheus: the rate() window")
	f.StringArrayVar(&splitFiles, "splits", nil, "read TrafficSplits from these manifests (file or folder; - for standard input) instead of the cluster")
	return cmd
}

// statArgs reads [KIND] [NAME], or KIND/NAME as kubectl takes it.
func statArgs(args []string) (stat.Kind, string, error) {
	if len(args) == 1 && strings.Contains(args[0], "/") {
		k, n, _ := strings.Cut(args[0], "/")
		args = []string{k, n}
	}
	kinds := map[string]stat.Kind{
		"svc": stat.Services, "service": stat.Services, "services": stat.Services,
		"deploy": stat.Deployments, "deployment": stat.Deployments, "deployments": stat.Deployments,
		"po": stat.Pods, "pod": stat.Pods, "pods": stat.Pods,
	}
	if len(args) == 0 {
		return stat.Services, "", nil
	}
	k, ok := kinds[strings.ToLower(args[0])]
	if !ok {
		return "", "", fmt.Errorf("%q is not svc, deploy or pod", args[0])
	}
	if len(args) == 2 {
		return k, args[1], nil
	}
	return k, "", nil
}

func statTitle(cmd *cobra.Command, args []string) []string {
	title := append([]string{"stat"}, args...)
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name != "watch" && f.Name != "kubeconfig" {
			title = append(title, "--"+f.Name+"="+f.Value.String())
		}
	})
	return title
}

// splitReader reads the cluster's TrafficSplits, bounded so that a
// cluster that does not answer delays a table by seconds, not minutes.
func splitReader(c client.Reader) func(context.Context) ([]stat.Split, error) {
	return func(ctx context.Context) ([]stat.Split, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return stat.ReadSplits(ctx, c)
	}
}

// contextNamespace is the kubeconfig's current namespace ("default"
// when it names none), as kubectl picks it.
func contextNamespace(kubeconfig string) (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).Namespace()
	return ns, err
}
