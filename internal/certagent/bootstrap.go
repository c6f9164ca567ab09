package certagent

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/xds"
)

// DefaultRefreshInterval is how often gRPC's file_watcher re-reads the
// files. Certificates are renewed at half their lifetime (hours), so any
// interval of seconds to minutes is safe for renewal; it is short because
// a root rotation waits, at each step, for every proxy's ACK, and the
// agent ACKs only once the application has had one interval to re-read
// (see Options.RefreshInterval). Reading three small files every 15 s costs
// nothing measurable. (Istio's agent writes 900 s; gRPC's own default is
// 10 min.)
const DefaultRefreshInterval = 15 * time.Second

// BootstrapConfig is what varies in a proxyless gRPC application's xDS
// bootstrap.
type BootstrapConfig struct {
	// XDSAddress is host:port of weft-controller's plaintext xDS port
	// (15010): gRPC applications take configuration there without
	// authenticating, and never keys (those come from the agent's files).
	XDSAddress string
	Node       Node
	// CertDir is the agent's output directory.
	CertDir string
	// RefreshInterval is the file_watcher's; default DefaultRefreshInterval.
	RefreshInterval time.Duration
}

// Bootstrap returns the gRPC xDS bootstrap (the file GRPC_XDS_BOOTSTRAP
// names) for a proxyless gRPC application whose certificates the agent
// keeps in c.CertDir: the node as weft-controller reads it (xds.ParseNode,
// PROXY_KIND grpc), the certificate provider instance "weft" that weft's
// xDS resources name (certificate "DEFAULT" and roots "ROOTCA" both come
// from one file_watcher instance), and the server listener name template.
func Bootstrap(c BootstrapConfig) ([]byte, error) {
	if _, _, err := net.SplitHostPort(c.XDSAddress); err != nil {
		return nil, fmt.Errorf("xDS address %q is not host:port", c.XDSAddress)
	}
	if err := c.Node.validate(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.CertDir) {
		return nil, fmt.Errorf("certificate directory %q is not an absolute path", c.CertDir)
	}
	refresh := c.RefreshInterval
	if refresh == 0 {
		refresh = DefaultRefreshInterval
	}
	if refresh < 0 {
		return nil, fmt.Errorf("refresh interval %s is negative", refresh)
	}
	labels := map[string]any{}
	for k, v := range c.Node.Labels {
		labels[k] = v
	}
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      c.XDSAddress,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       c.Node.ID,
			"locality": map[string]any{},
			"metadata": map[string]any{
				xds.MetaNamespace:      c.Node.Namespace,
				xds.MetaServiceAccount: c.Node.ServiceAccount,
				xds.MetaLabels:         labels,
				xds.MetaPodIPs:         strings.Join(c.Node.IPs, ","),
				xds.MetaProxyKind:      "grpc",
			},
		},
		"certificate_providers": map[string]any{envoy.GRPCCertProvider: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    filepath.Join(c.CertDir, CertFile),
				"private_key_file":    filepath.Join(c.CertDir, KeyFile),
				"ca_certificate_file": filepath.Join(c.CertDir, RootFile),
				"refresh_interval":    strconv.FormatFloat(refresh.Seconds(), 'f', -1, 64) + "s",
			},
		}},
		"server_listener_resource_name_template": envoy.GRPCServerListenerPrefix + "%s",
	}
	return json.MarshalIndent(b, "", "  ")
}

// WriteBootstrap writes the bootstrap to path atomically (a temporary file
// renamed over it), so an application starting meanwhile reads a whole
// file.
func WriteBootstrap(path string, c BootstrapConfig) error {
	data, err := Bootstrap(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing the gRPC bootstrap %s: %w", path, err)
	}
	return nil
}
