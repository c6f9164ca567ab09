// Command weft-controller is weft's control plane: it watches the cluster and
// serves Envoy configuration over xDS. This file only maps flags to
// controller.Options.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/weftmesh/weft/internal/controller"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/webhook"
)

// exitUsage is the exit code for a bad command line, as Go's flag package uses.
const exitUsage = 2

func main() {
	o := controller.DefaultOptions()
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		o.LeaderElectionNamespace = ns
	}
	usageErr := false
	cmd := &cobra.Command{
		Use:           "weft-controller",
		Short:         "weft's control plane: Kubernetes and weft policies in, Envoy xDS out",
		Args:          cobra.NoArgs,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				usageErr = true
				return err
			}
			log := zap.New(zap.UseDevMode(o.LogFormat == "text"), zap.Level(level(o.LogLevel)))
			ctrl.SetLogger(log)
			klog.SetLogger(log.WithName("client-go"))
			return controller.Run(ctrl.SetupSignalHandler(), o, log)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		usageErr = true
		return err
	})
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file; empty means $KUBECONFIG, ~/.kube/config, then in-cluster")
	f.StringVar(&o.XDSAddress, "xds-address", o.XDSAddress, "host:port of the anonymous plaintext gRPC xDS server (proxyless gRPC without certificates, development); empty (the default) means off: any client reaching it can read the configuration of any identity it claims")
	f.IntVar(&o.XDSPlaintextMaxStreams, "xds-plaintext-max-streams", o.XDSPlaintextMaxStreams, "most streams the plaintext xDS port serves at once; more are refused with ResourceExhausted")
	f.IntVar(&o.XDSPlaintextMaxGroups, "xds-plaintext-max-groups", o.XDSPlaintextMaxGroups, "most proxy groups (distinct identity and labels) the plaintext xDS port builds for; streams that would add more are refused")
	f.StringVar(&o.XDSTLSAddress, "xds-tls-address", o.XDSTLSAddress, "host:port of the xDS server over TLS (injected sidecars)")
	f.StringVar(&o.MonitoringAddress, "monitoring-address", o.MonitoringAddress, "host:port serving /metrics, /healthz and /readyz")
	f.StringVar(&o.XDSAuth, "xds-auth", o.XDSAuth, "how proxies authenticate on the TLS port: token (a workload certificate over mTLS, else a ServiceAccount token for audience weft) or none (development only: no secrets are served)")
	f.StringVar(&o.DebugAddress, "debug-address", o.DebugAddress, "host:port serving /debug/proxies and /debug/config_dump (keep it on localhost)")
	f.StringVar(&o.WebhookAddress, "webhook-address", o.WebhookAddress, "host:port of the HTTPS sidecar injection webhook (the weft-webhook Service's target port)")
	f.BoolVar(&o.LeaderElection, "leader-elect", o.LeaderElection, "take the weft-controller Lease before writing to the cluster")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader-election Lease (default $POD_NAMESPACE, else weft-system)")
	f.StringVar(&o.ProxyImage, "proxy-image", webhook.DefaultProxyImage, "the sidecar's Envoy image when MeshConfig spec.sidecar.image names none (MeshConfig, then a pod's weft.dev/proxy-image annotation, take precedence)")
	f.StringVar(&o.InitImage, "init-image", webhook.DefaultInitImage, "the weft-init image injected into meshed pods (MeshConfig spec.sidecar.initImage takes precedence)")
	f.StringVar(&o.AgentImage, "agent-image", webhook.DefaultAgentImage, "the image running `weft agent` in proxyless gRPC pods (MeshConfig spec.sidecar.agentImage takes precedence)")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info or error")
	f.StringVar(&o.LogFormat, "log-format", o.LogFormat, "json or text")

	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "weft-controller: %v\n", err)
		if usageErr {
			os.Exit(exitUsage)
		}
		os.Exit(1)
	}
}

func level(s string) zapcore.Level {
	switch s {
	case "debug":
		return zapcore.DebugLevel
	case "error":
		return zapcore.ErrorLevel
	}
	return zapcore.InfoLevel
}
