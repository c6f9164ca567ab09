package certagent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/dataplane"
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

// XDSRootFile, in the agent's output directory, holds the roots that the
// application's own xDS stream verifies weft-controller's serving
// certificate with: the agent keeps it equal to its --root-cert (the
// weft-root-ca ConfigMap's root-cert.pem, which the application's
// container does not mount). It is not the trust bundle (RootFile): with
// cert-manager, workloads trust cert-manager's CA while weft-controller's
// serving certificate still comes from the mesh root.
const XDSRootFile = "xds-root-cert.pem"

// BootstrapConfig is what varies in a proxyless gRPC application's xDS
// bootstrap.
type BootstrapConfig struct {
	// XDSAddress is weft-controller's xDS server for the application's own
	// stream, host:port or a gRPC target URI (dns:///host:port). By default
	// it is the authenticated TLS port (15012): gRPC verifies the server
	// against CertDir/XDSRootFile, by the address's host name, and proves
	// the pod's identity with the workload certificate in CertDir (gRFC
	// A65 "tls" channel credentials), so weft-controller knows the stream
	// is the identity its node claims.
	XDSAddress string
	// Plaintext makes the stream use no transport security, for
	// weft-controller's plaintext port (15010), which serves configuration
	// to anyone and authenticates no one. For clusters whose controller
	// predates authenticated proxyless streams, and for development.
	Plaintext bool
	Node      Node
	// CertDir is the agent's output directory.
	CertDir string
	// RefreshInterval is the file_watcher's (for the mTLS files and the
	// xDS channel's); default DefaultRefreshInterval.
	RefreshInterval time.Duration
}

// Bootstrap returns the gRPC xDS bootstrap (the file GRPC_XDS_BOOTSTRAP
// names) for a proxyless gRPC application whose certificates the agent
// keeps in c.CertDir: the xDS server with "tls" channel credentials over
// the agent's files (or "insecure" when c.Plaintext), the node as
// weft-controller reads it (xds.ParseNode, PROXY_KIND grpc), the
// certificate provider instance "weft" that weft's xDS resources name
// (certificate "DEFAULT" and roots "ROOTCA" both come from one
// file_watcher instance), and the server listener name template.
func Bootstrap(c BootstrapConfig) ([]byte, error) {
	if err := checkTarget(c.XDSAddress); err != nil {
		return nil, err
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
	interval := strconv.FormatFloat(refresh.Seconds(), 'f', -1, 64) + "s"
	creds := map[string]any{"type": "tls", "config": map[string]any{
		"ca_certificate_file": filepath.Join(c.CertDir, XDSRootFile),
		"certificate_file":    filepath.Join(c.CertDir, CertFile),
		"private_key_file":    filepath.Join(c.CertDir, KeyFile),
		"refresh_interval":    interval,
	}}
	if c.Plaintext {
		creds = map[string]any{"type": "insecure"}
	}
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      c.XDSAddress,
			"channel_creds":   []any{creds},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       c.Node.ID,
			"locality": map[string]any{},
			"metadata": dataplane.NodeMetadata(dataplane.NodeMeta{
				Namespace:      c.Node.Namespace,
				ServiceAccount: c.Node.ServiceAccount,
				Labels:         c.Node.Labels,
				PodIPs:         strings.Join(c.Node.IPs, ","),
				Kind:           dataplane.KindNameGRPC,
			}),
		},
		"certificate_providers": map[string]any{dataplane.GRPCCertProvider: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    filepath.Join(c.CertDir, CertFile),
				"private_key_file":    filepath.Join(c.CertDir, KeyFile),
				"ca_certificate_file": filepath.Join(c.CertDir, RootFile),
				"refresh_interval":    interval,
			},
		}},
		"server_listener_resource_name_template": dataplane.GRPCServerListenerPrefix + "%s",
	}
	return json.MarshalIndent(b, "", "  ")
}

// checkTarget accepts host:port or a gRPC target URI whose endpoint is
// host:port (dns:///weft-controller.weft-system.svc:15012).
func checkTarget(addr string) error {
	endpoint := addr
	if scheme, _, ok := strings.Cut(addr, "://"); ok {
		u, err := url.Parse(addr)
		if err != nil || scheme == "" {
			return fmt.Errorf("xDS address %q is neither host:port nor a gRPC target such as dns:///host:port", addr)
		}
		endpoint = strings.TrimPrefix(u.Path, "/")
		if endpoint == "" {
			endpoint = u.Host
		}
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		return fmt.Errorf("xDS address %q is not host:port (or a gRPC target such as dns:///host:port)", addr)
	}
	return nil
}

// WriteBootstrap writes the bootstrap to path atomically, so an
// application starting meanwhile reads a whole file.
func WriteBootstrap(path string, c BootstrapConfig) error {
	data, err := Bootstrap(c)
	if err != nil {
		return err
	}
	if err := writeAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("writing the gRPC bootstrap %s: %w", path, err)
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, creating the directory if needed.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
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
	}
	return err
}
