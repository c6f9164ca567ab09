// Package controlplane wires weft-controller together: the Kubernetes client
// and leader election (through a controller-runtime manager), the xDS server,
// and the monitoring endpoints. cmd/weft-controller only parses flags into
// Options and calls Run.
package controller

import (
	"fmt"
	"net"
	"strconv"

	"github.com/weftmesh/weft/xds"
)

// Options configures a control plane process. Each field maps to one flag of
// weft-controller; errors from Validate name that flag.
type Options struct {
	// Kubeconfig is a kubeconfig file; empty means $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster service account.
	Kubeconfig string
	// XDSAddress is where the anonymous plaintext xDS server listens, for
	// proxyless gRPC clients that cannot present a workload certificate,
	// and development. Empty (the default) means no plaintext listener:
	// anyone who can reach it may claim any identity and read that
	// identity's configuration (docs/design/070-threat-model.md), so an
	// operator turns it on deliberately, preferably on one interface
	// (127.0.0.1:15010, or the pod IP behind a NetworkPolicy). Its streams
	// are capped (xds.MaxAnonymousStreams, xds.MaxAnonymousGroups).
	XDSAddress string
	// XDSPlaintextMaxStreams and XDSPlaintextMaxGroups cap the anonymous
	// port's streams and proxy groups (distinct label sets) when it is on.
	XDSPlaintextMaxStreams, XDSPlaintextMaxGroups int
	// XDSTLSAddress is where it listens over TLS, with a certificate from
	// the mesh root: injected sidecars connect here.
	XDSTLSAddress string
	// MonitoringAddress serves /metrics, /healthz and /readyz over HTTP.
	MonitoringAddress string
	// DebugAddress serves the xDS debug endpoints (proxy status, config
	// dumps); localhost by default, since config dumps reveal the mesh.
	DebugAddress string
	// XDSAuth is how proxies prove who they are: "token" (a workload
	// certificate over mTLS, else a ServiceAccount token for audience
	// weft, checked by TokenReview) or "none" (for
	// development only: any stream may claim any node, and no secrets are
	// served).
	XDSAuth string
	// WebhookAddress serves the sidecar injection webhook over HTTPS.
	WebhookAddress string
	// LeaderElection makes replicas take a Lease before they write anything
	// to the cluster. Only single-replica development setups turn it off.
	LeaderElection bool
	// LeaderElectionNamespace holds the Lease.
	LeaderElectionNamespace string
	// ProxyImage, InitImage and AgentImage are the images the webhook
	// injects: the sidecar's proxy when MeshConfig names none, weft-init,
	// and `weft agent` for proxyless gRPC pods. Empty means the webhook's
	// defaults: the pinned Envoy release, and weft's own images of this
	// build's version (docs/design/087).
	ProxyImage, InitImage, AgentImage string
	// LogLevel is debug, info or error.
	LogLevel string
	// LogFormat is json (for clusters) or text (for people).
	LogFormat string
}

// LeaseName is the name of the leader-election Lease.
const LeaseName = "weft-controller"

// DefaultOptions are the defaults of weft-controller's flags.
func DefaultOptions() Options {
	return Options{
		XDSAddress:              "", // off: see Options.XDSAddress
		XDSPlaintextMaxStreams:  xds.MaxAnonymousStreams,
		XDSPlaintextMaxGroups:   xds.MaxAnonymousGroups,
		XDSTLSAddress:           ":15012",
		MonitoringAddress:       ":9090",
		DebugAddress:            "127.0.0.1:15014",
		XDSAuth:                 "token",
		WebhookAddress:          ":9443",
		LeaderElection:          true,
		LeaderElectionNamespace: "weft-system",
		LogLevel:                "info",
		LogFormat:               "json",
	}
}

// Validate checks every option and names the flag to fix.
func (o Options) Validate() error {
	if o.XDSAddress != "" {
		if err := validateAddress("--xds-address", o.XDSAddress); err != nil {
			return err
		}
	}
	if err := validateAddress("--monitoring-address", o.MonitoringAddress); err != nil {
		return err
	}
	if err := validateAddress("--xds-tls-address", o.XDSTLSAddress); err != nil {
		return err
	}
	if o.XDSTLSAddress == o.XDSAddress || o.XDSTLSAddress == o.MonitoringAddress || o.XDSTLSAddress == o.DebugAddress {
		return fmt.Errorf("--xds-tls-address %q is also another listener's address: give it its own port", o.XDSTLSAddress)
	}
	if err := validateAddress("--debug-address", o.DebugAddress); err != nil {
		return err
	}
	if o.DebugAddress == o.MonitoringAddress || o.XDSAddress != "" && o.DebugAddress == o.XDSAddress {
		return fmt.Errorf("--debug-address %q is also another listener's address: give it its own port", o.DebugAddress)
	}
	if err := validateAddress("--webhook-address", o.WebhookAddress); err != nil {
		return err
	}
	if o.WebhookAddress == o.MonitoringAddress || o.WebhookAddress == o.DebugAddress || o.XDSAddress != "" && o.WebhookAddress == o.XDSAddress {
		return fmt.Errorf("--webhook-address %q is also another listener's address: give it its own port", o.WebhookAddress)
	}
	if o.XDSAddress == o.MonitoringAddress {
		return fmt.Errorf("--xds-address and --monitoring-address are both %q: give each its own port", o.XDSAddress)
	}
	if o.LeaderElection && o.LeaderElectionNamespace == "" {
		return fmt.Errorf("--leader-election-namespace is empty: name the namespace that holds the %q Lease, or pass --leader-elect=false", LeaseName)
	}
	if o.XDSPlaintextMaxStreams < 1 || o.XDSPlaintextMaxGroups < 1 {
		return fmt.Errorf("--xds-plaintext-max-streams %d and --xds-plaintext-max-groups %d must be at least 1 (turn the plaintext port off with an empty --xds-address instead)", o.XDSPlaintextMaxStreams, o.XDSPlaintextMaxGroups)
	}
	switch o.XDSAuth {
	case "token", "none":
	default:
		return fmt.Errorf("--xds-auth %q is not a mode: use token (ServiceAccount tokens, the default) or none (development only)", o.XDSAuth)
	}
	switch o.LogLevel {
	case "debug", "info", "error":
	default:
		return fmt.Errorf("--log-level %q is not a level: use debug, info or error", o.LogLevel)
	}
	switch o.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("--log-format %q is not a format: use json or text", o.LogFormat)
	}
	return nil
}

func validateAddress(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port (for example :15010 or 127.0.0.1:15010)", flag, addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%s %q: host must be an IP address, localhost, or empty for all interfaces", flag, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s %q: port must be a number from 0 to 65535", flag, addr)
	}
	return nil
}
