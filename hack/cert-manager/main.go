// Command cert-manager-controller runs cert-manager's own controllers, from
// the cert-manager Go module, against an API server named by a kubeconfig.
//
// cert-manager's real entry point lives in the nested module
// github.com/cert-manager/cert-manager/cmd/controller, which the Go module
// proxy does not serve (".../cmd/controller/@v/list: 404"). The controllers
// themselves live in the main module under pkg/controller and register
// themselves by name in init functions, exactly as in cert-manager's binary;
// this program is the thin wiring cert-manager's cmd/controller does: build
// a controller.ContextFactory, construct the named controllers, start the
// shared informers, run. It exists for weft's integration tests
// (certs/certmanager) and is built by hack/build-cert-manager.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"k8s.io/klog/v2"

	// Each import registers its controllers with controllerpkg.Known().
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// And these register the issuer types the (cluster)issuers controllers
	// set up and check (without them: "issuer 'ca' not registered").
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// buildID is set by hack/build-cert-manager.sh to a hash of this module's
// sources, so the script can tell a stale binary from a current one.
var buildID = "dev"

func main() {
	var (
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig of the API server to reconcile")
		namespace   = flag.String("namespace", "", "only watch this namespace (empty: all namespaces)")
		clusterNS   = flag.String("cluster-resource-namespace", "kube-system", "namespace of ClusterIssuer secrets")
		controllers = flag.String("controllers", "issuers,clusterissuers,certificaterequests-approver,certificaterequests-issuer-ca",
			"comma-separated controllers to run; '*' runs every controller compiled in")
		workers     = flag.Int("concurrent-workers", 2, "workers per controller")
		version     = flag.Bool("version", false, "print the version and exit")
		leaderElect = flag.Bool("leader-elect", false, "accepted for cert-manager compatibility; must be false (no leader election here)")
	)
	klog.InitFlags(nil)
	flag.Parse()

	if *version {
		fmt.Printf("cert-manager-controller %s (weft test build %s)\n", cmVersion(), buildID)
		return
	}
	if *leaderElect {
		fatal(errors.New("--leader-elect=true is not supported by this test build"))
	}

	names, err := selectControllers(*controllers)
	if err != nil {
		fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, klog.Background(), "cert-manager")

	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		Namespace:          *namespace,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterNS,
		},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		fatal(err)
	}

	var run []controllerpkg.Interface
	for _, name := range names {
		c, err := controllerpkg.Known()[name](factory)
		if err != nil {
			fatal(fmt.Errorf("constructing controller %s: %w", name, err))
		}
		run = append(run, c)
	}

	// Every Context built by the factory shares its informer factories:
	// start them once, after every controller has registered its informers.
	shared, err := factory.Build()
	if err != nil {
		fatal(err)
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())

	klog.InfoS("cert-manager controllers started", "controllers", names, "namespace", *namespace, "version", cmVersion())
	var wg sync.WaitGroup
	errs := make(chan error, len(run))
	for i, c := range run {
		wg.Go(func() {
			if err := c.Run(*workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %s: %w", names[i], err)
				stop()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(slices.Collect(func(yield func(error) bool) {
		for e := range errs {
			if !yield(e) {
				return
			}
		}
	})...); err != nil {
		fatal(err)
	}
}

func selectControllers(list string) ([]string, error) {
	known := controllerpkg.Known()
	if list == "*" {
		var all []string
		for name := range known {
			all = append(all, name)
		}
		slices.Sort(all)
		return all, nil
	}
	var names []string
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if _, ok := known[name]; !ok {
			var all []string
			for n := range known {
				all = append(all, n)
			}
			slices.Sort(all)
			return nil, fmt.Errorf("--controllers: unknown controller %q; known: %s", name, strings.Join(all, ", "))
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, errors.New("--controllers: no controller named")
	}
	return names, nil
}

// cmVersion is the cert-manager module version this binary was built from.
func cmVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cert-manager/cert-manager" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
	os.Exit(1)
}
