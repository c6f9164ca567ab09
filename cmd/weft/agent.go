package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/certagent"
	"github.com/weftmesh/weft/webhook/bootstrap"
)

// agentCmd is `weft agent`: the certificate agent beside a proxyless gRPC
// application (internal/certagent). Flags default to the environment the
// injected sidecar has (WEFT_POD_NAME, ...), and to the paths of its
// credentials volume.
func agentCmd() *cobra.Command {
	var (
		o             certagent.Options
		podName, ips  string
		labels        string
		bootstrapPath string
		grpcXDS       string
		grpcPlaintext bool
		readyAddr     string
		logFormat     string
	)
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Keep a proxyless gRPC workload's certificate files current",
		Long: `weft agent runs beside a proxyless gRPC application (a pod annotated
weft.dev/proxyless=grpc). gRPC-Go reads certificates only from files
(its file_watcher certificate provider), so the agent fetches the workload's
certificate from weft-controller's authenticated xDS port, as a sidecar
would, and keeps three files current in --out:

  cert-chain.pem  key.pem (0600)  root-cert.pem

switching all three together when the certificate is renewed or the trust
bundle changes. It also writes the gRPC xDS bootstrap (--bootstrap) that
names those files as the certificate provider instance "weft", and as the
credentials of the application's own xDS stream to the authenticated port
(with xds-root-cert.pem, the agent's copy of --root-cert); point the
application's GRPC_XDS_BOOTSTRAP at it.`,
		Example: "  weft agent --out /var/run/weft/certs --bootstrap /var/run/weft/grpc-bootstrap.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := zap.New(zap.UseDevMode(logFormat == "text"))
			ctrl.SetLogger(log)
			ns := o.Node.Namespace
			if podName == "" {
				return fmt.Errorf("--pod-name is empty: set it or %s (the downward API's metadata.name)", dataplane.EnvPodName)
			}
			if ns == "" {
				return fmt.Errorf("--namespace is empty: set it or %s (the downward API's metadata.namespace)", dataplane.EnvPodNamespace)
			}
			if o.Node.ServiceAccount == "" {
				return fmt.Errorf("--service-account is empty: set it or %s (the downward API's spec.serviceAccountName)", dataplane.EnvServiceAccount)
			}
			o.Node.ID = podName + "." + ns
			for _, ip := range strings.Split(ips, ",") {
				if ip = strings.TrimSpace(ip); ip != "" {
					if net.ParseIP(ip) == nil {
						return fmt.Errorf("--pod-ips: %q is not an IP address", ip)
					}
					o.Node.IPs = append(o.Node.IPs, ip)
				}
			}
			var err error
			if o.Node.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if !filepath.IsAbs(o.OutDir) {
				return fmt.Errorf("--out %q is not an absolute path (the bootstrap names the files by it)", o.OutDir)
			}
			if o.RefreshInterval <= 0 {
				return fmt.Errorf("--refresh-interval %s: give a positive duration such as 15s", o.RefreshInterval)
			}
			o.Log = log.WithName("agent")
			agent, err := certagent.New(o)
			if err != nil {
				return err
			}
			if bootstrapPath != "" {
				if grpcXDS == "" && grpcPlaintext {
					return errors.New("--grpc-xds-plaintext needs --grpc-xds-address: name weft-controller's plaintext port, such as weft-controller.weft-system.svc:15010")
				}
				if grpcXDS == "" {
					grpcXDS = o.XDSAddress
				}
				if err := certagent.WriteBootstrap(bootstrapPath, certagent.BootstrapConfig{
					XDSAddress: grpcXDS, Plaintext: grpcPlaintext, Node: o.Node, CertDir: o.OutDir, RefreshInterval: o.RefreshInterval,
				}); err != nil {
					return fmt.Errorf("--bootstrap: %w", err)
				}
				log.Info("wrote the gRPC xDS bootstrap", "path", bootstrapPath)
			}
			ctx := ctrl.SetupSignalHandler()
			if readyAddr != "" {
				if err := serveReady(ctx, readyAddr, agent); err != nil {
					return fmt.Errorf("--ready-address: %w", err)
				}
			}
			return agent.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.XDSAddress, "xds-address", "weft-controller.weft-system.svc:15012", "host:port of weft-controller's authenticated (TLS) xDS port")
	f.StringVar(&o.ServerName, "xds-server-name", "", "name the xDS server's certificate must carry (default: the host of --xds-address)")
	f.StringVar(&o.RootCertFile, "root-cert", bootstrap.CredentialsDir+"/"+dataplane.RootCertFile, "the mesh root CA: the weft-root-ca ConfigMap's root-cert.pem")
	f.StringVar(&o.TokenFile, "token-file", bootstrap.CredentialsDir+"/"+bootstrap.TokenFile, "a projected ServiceAccount token with audience weft")
	f.StringVar(&o.OutDir, "out", "/var/run/weft/certs", "directory for cert-chain.pem, key.pem and root-cert.pem (absolute)")
	f.StringVar(&bootstrapPath, "bootstrap", "/var/run/weft/grpc-bootstrap.json", "where to write the application's gRPC xDS bootstrap (empty: do not write one)")
	f.StringVar(&grpcXDS, "grpc-xds-address", "", "the xDS server the application's bootstrap names, host:port or a gRPC target (default --xds-address: the authenticated TLS port, where the application proves its identity with the workload certificate)")
	f.BoolVar(&grpcPlaintext, "grpc-xds-plaintext", false, "make the application's xDS stream plaintext and unauthenticated, for weft-controller's plaintext port (15010; give --grpc-xds-address)")
	f.DurationVar(&o.RefreshInterval, "refresh-interval", certagent.DefaultRefreshInterval, "how often gRPC re-reads the files (written into the bootstrap); the agent ACKs a new certificate this long after writing it")
	f.StringVar(&podName, "pod-name", env(dataplane.EnvPodName, ""), "the pod's name (default $"+dataplane.EnvPodName+")")
	f.StringVar(&o.Node.Namespace, "namespace", env(dataplane.EnvPodNamespace, ""), "the pod's namespace (default $"+dataplane.EnvPodNamespace+")")
	f.StringVar(&o.Node.ServiceAccount, "service-account", env(dataplane.EnvServiceAccount, ""), "the pod's service account (default $"+dataplane.EnvServiceAccount+")")
	f.StringVar(&ips, "pod-ips", env(dataplane.EnvPodIPs, ""), "the pod's IPs, comma-separated, for the bootstrap (default $"+dataplane.EnvPodIPs+")")
	f.StringVar(&labels, "labels", "", "the pod's labels as key=value,... for the bootstrap (weft selects the pod's Services with them)")
	f.StringVar(&readyAddr, "ready-address", "", "host:port serving /ready: 200 once the certificate is installed (for a startup probe)")
	f.StringVar(&logFormat, "log-format", "json", "json or text")
	return cmd
}

// parseLabels reads key=value,... (label values contain no commas).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func serveReady(ctx context.Context, addr string, agent *certagent.Agent) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := agent.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = srv.Close()
		}
	}()
	return nil
}
