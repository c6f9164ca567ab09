// Package certagent is weft's certificate agent for proxyless gRPC
// applications. gRPC-Go reads certificates only from certificate provider
// plugins (file_watcher), never over SDS, so the agent, running beside the
// application, takes the workload's certificate from weft-controller's
// authenticated xDS port — as an injected sidecar would — and keeps it in
// files that gRPC watches:
//
//   - it dials the TLS xDS port, verifying the server against the mesh root
//     (the weft-root-ca ConfigMap's file, re-read at every connection so a
//     root rotation is followed), and sends the projected ServiceAccount
//     token as sidecars do;
//   - it subscribes to the two SDS secrets weft's resources name
//     (translator/envoy's WorkloadCertSecret and TrustBundleSecret), and
//     nothing else;
//   - it checks what it receives, installs it with Write (the certificate,
//     key and bundle switch together), and ACKs once gRPC has had one
//     refresh interval to re-read the files; when it cannot use or write a
//     secret it NACKs with the reason and keeps the files it has;
//   - renewals arrive as new secret versions on the same stream;
//   - it keeps a copy of the mesh root (XDSRootFile) for the application,
//     whose own xDS stream authenticates with the workload certificate.
//
// Bootstrap writes the matching gRPC xDS bootstrap. The private key is
// never logged.
package certagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
)

// Node is the workload the agent speaks for. ID is "<pod>.<namespace>", as
// in every weft bootstrap.
type Node struct {
	ID, Namespace, ServiceAccount string
	Labels                        map[string]string
	IPs                           []string
}

func (n Node) validate() error {
	switch {
	case n.ID == "":
		return errors.New("the node id is empty: it is <pod name>.<namespace>")
	case n.Namespace == "":
		return errors.New("the namespace is empty")
	case n.ServiceAccount == "":
		return errors.New("the service account is empty")
	}
	return nil
}

// Options configure an Agent.
type Options struct {
	// XDSAddress is host:port of weft-controller's authenticated (TLS) xDS
	// port, 15012.
	XDSAddress string
	// ServerName is the name the xDS server's certificate must carry;
	// default the host of XDSAddress.
	ServerName string
	// RootCertFile holds the mesh root CA (the weft-root-ca ConfigMap's
	// root-cert.pem). It is read at every connection.
	RootCertFile string
	// TokenFile holds the projected ServiceAccount token for audience
	// weft. It is read for every stream, so a refreshed token is used.
	TokenFile string
	// Node is sent as the stream's node. Its IPs are not sent: the agent
	// needs no per-pod listeners, so the agents of one Deployment share one
	// group (one build) in the xDS server.
	Node Node
	// OutDir receives the files (see Write).
	OutDir string
	// RefreshInterval is the file_watcher refresh interval of the
	// application's bootstrap. The agent ACKs a secret this long after
	// writing it, so an ACK means the application has re-read its files
	// (what a root rotation waits for). Default DefaultRefreshInterval.
	RefreshInterval time.Duration
	// Credentials replace TLS from RootCertFile (tests). The token is sent
	// only over a secure transport either way.
	Credentials credentials.TransportCredentials
	// InitialBackoff and MaxBackoff bound the wait between reconnects,
	// doubling from one to the other; defaults 1 s and 30 s.
	InitialBackoff, MaxBackoff time.Duration
	Log                        logr.Logger
}

// Agent keeps one workload's certificate files current.
type Agent struct {
	o     Options
	ready atomic.Bool

	// Only Run's goroutine touches the stream state below; mu guards what
	// Written reads.
	versions map[string]string // secret name → version held
	pending  struct{ chain, key, bundle []byte }
	mu       sync.Mutex
	written  Material

	rootsMu sync.Mutex
	roots   []byte // what XDSRootFile was last given
}

// New checks o and returns an Agent. Errors name the option.
func New(o Options) (*Agent, error) {
	host, _, err := net.SplitHostPort(o.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("xDS address %q is not host:port", o.XDSAddress)
	}
	if o.ServerName == "" {
		o.ServerName = host
	}
	if err := o.Node.validate(); err != nil {
		return nil, err
	}
	if o.OutDir == "" {
		return nil, errors.New("the output directory is empty")
	}
	if o.Credentials == nil && o.RootCertFile == "" {
		return nil, errors.New("the root certificate file is empty: name the mounted weft-root-ca ConfigMap's root-cert.pem")
	}
	if o.TokenFile == "" {
		return nil, errors.New("the token file is empty: name the projected ServiceAccount token (audience weft)")
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.InitialBackoff == 0 {
		o.InitialBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	a := &Agent{o: o, versions: map[string]string{}}
	// Files from an earlier run of the agent (a restarted container) are
	// not rewritten when the server sends the same material again.
	if m, err := Read(o.OutDir); err == nil {
		a.written = m
	}
	return a, nil
}

// Ready reports whether the agent has installed the workload's
// certificate since it started.
func (a *Agent) Ready() error {
	if !a.ready.Load() {
		return errors.New("no certificate installed yet")
	}
	return nil
}

// Written is the material the agent installed last.
func (a *Agent) Written() Material {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.written
}

// Run keeps the files current until ctx is done, reconnecting with backoff
// when the stream fails. It returns nil when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.o.RootCertFile != "" {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); a.followXDSRoots(ctx) }()
	}
	backoff := a.o.InitialBackoff
	for {
		got, err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = a.o.InitialBackoff
		}
		a.o.Log.Info("xDS stream ended; reconnecting", "address", a.o.XDSAddress, "error", errString(err), "in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, a.o.MaxBackoff)
	}
}

// session runs one stream; got reports whether any response arrived.
func (a *Agent) session(ctx context.Context) (got bool, err error) {
	creds := a.o.Credentials
	if creds == nil {
		data, pool, err := a.readRoots()
		if err != nil {
			return false, err
		}
		// The application's xDS stream verifies the server with the same
		// roots (see XDSRootFile); the copy is in place before the agent
		// is ready.
		if err := a.copyXDSRoots(data); err != nil {
			return false, err
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: a.o.ServerName, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(a.o.XDSAddress, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(tokenFile(a.o.TokenFile)))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return false, err
	}
	md, err := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{
		Namespace:      a.o.Node.Namespace,
		ServiceAccount: a.o.Node.ServiceAccount,
		Labels:         a.o.Node.Labels,
		Kind:           dataplane.KindNameGRPC,
	}))
	if err != nil {
		return false, err
	}
	initial := map[string]string{}
	for k, v := range a.versions {
		initial[k] = v
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                    &corev3.Node{Id: a.o.Node.ID, Metadata: md},
		TypeUrl:                 secretType,
		ResourceNamesSubscribe:  []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret},
		InitialResourceVersions: initial,
	}); err != nil {
		return false, err
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			return got, err
		}
		got = true
		reply := a.handle(ctx, r)
		if ctx.Err() != nil {
			return got, nil
		}
		if err := stream.Send(reply); err != nil {
			return got, err
		}
	}
}

// handle applies one response and returns the ACK or NACK. On success it
// waits one refresh interval after writing before it returns the ACK.
func (a *Agent) handle(ctx context.Context, r *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	reply := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}
	nack := func(code codes.Code, msg string) *discoveryv3.DeltaDiscoveryRequest {
		a.o.Log.Info("rejecting secrets from the control plane", "reason", msg)
		reply.ErrorDetail = &rpcstatus.Status{Code: int32(code), Message: "weft agent: " + msg}
		return reply
	}
	if r.TypeUrl != secretType {
		return nack(codes.InvalidArgument, fmt.Sprintf("received %s; the agent subscribes to secrets only", r.TypeUrl))
	}
	// Apply to a copy: a NACKed response changes nothing.
	next := a.pending
	versions := map[string]string{}
	for k, v := range a.versions {
		versions[k] = v
	}
	for _, res := range r.Resources {
		var s tlsv3.Secret
		if err := res.GetResource().UnmarshalTo(&s); err != nil {
			return nack(codes.InvalidArgument, fmt.Sprintf("secret %q is not an envoy Secret: %v", res.Name, err))
		}
		switch res.Name {
		case dataplane.WorkloadCertSecret:
			tc := s.GetTlsCertificate()
			next.chain, next.key = tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
			if len(next.chain) == 0 || len(next.key) == 0 {
				return nack(codes.InvalidArgument, fmt.Sprintf("secret %q lacks an inline certificate chain or private key", res.Name))
			}
		case dataplane.TrustBundleSecret:
			next.bundle = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
			if len(next.bundle) == 0 {
				return nack(codes.InvalidArgument, fmt.Sprintf("secret %q lacks an inline trusted CA", res.Name))
			}
		default:
			return nack(codes.InvalidArgument, fmt.Sprintf("secret %q was not asked for", res.Name))
		}
		versions[res.Name] = res.Version
	}
	for _, name := range r.RemovedResources {
		// The control plane withdraws a certificate that expired while
		// renewals failed. The files stay: gRPC keeps what it has, and
		// the next certificate replaces them.
		a.o.Log.Info("the control plane withdrew a secret; keeping the files until it sends a new one", "secret", name)
		delete(versions, name)
	}
	m := Material{Chain: next.chain, Key: next.key, Bundle: next.bundle}
	if len(m.Chain) > 0 && len(m.Bundle) > 0 && !m.Equal(a.Written()) {
		leaf, err := m.Check(a.o.Node.Namespace, a.o.Node.ServiceAccount)
		if err != nil {
			return nack(codes.InvalidArgument, err.Error()+"; keeping the files in "+a.o.OutDir)
		}
		if err := Write(a.o.OutDir, m); err != nil {
			return nack(codes.Internal, fmt.Sprintf("cannot install the certificate: %v; keeping the files in %s", err, a.o.OutDir))
		}
		a.mu.Lock()
		a.written = m
		a.mu.Unlock()
		a.o.Log.Info("installed the workload certificate", "dir", a.o.OutDir, "identity", leaf.URIs[0].String(),
			"serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
		a.pending, a.versions = next, versions
		a.ready.Store(true)
		// ACK once the application has re-read the files.
		select {
		case <-ctx.Done():
		case <-time.After(a.o.RefreshInterval + refreshMargin):
		}
		return reply
	}
	if len(m.Chain) > 0 && len(m.Bundle) > 0 {
		a.ready.Store(true) // the files already hold exactly this
	}
	a.pending, a.versions = next, versions
	return reply
}

// refreshMargin covers the file_watcher's read after its tick.
const refreshMargin = 100 * time.Millisecond

// readRoots reads the mesh roots in RootCertFile, now.
func (a *Agent) readRoots() ([]byte, *x509.CertPool, error) {
	data, err := os.ReadFile(a.o.RootCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the mesh root (root certificate file): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate: mount the weft-root-ca ConfigMap's root-cert.pem", a.o.RootCertFile)
	}
	return data, pool, nil
}

// copyXDSRoots installs data as OutDir/XDSRootFile unless it holds that
// already.
func (a *Agent) copyXDSRoots(data []byte) error {
	a.rootsMu.Lock()
	defer a.rootsMu.Unlock()
	if bytes.Equal(data, a.roots) {
		return nil
	}
	path := filepath.Join(a.o.OutDir, XDSRootFile)
	if err := writeAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("copying the mesh root for the application's xDS stream: %w", err)
	}
	a.roots = bytes.Clone(data)
	a.o.Log.Info("installed the roots the application verifies weft-controller with", "file", path)
	return nil
}

// followXDSRoots re-reads RootCertFile every refresh interval until ctx
// ends and copies a change (the kubelet updates the mounted ConfigMap
// during a root rotation), so the application can verify weft-controller's
// serving certificate from the new root when it next connects.
func (a *Agent) followXDSRoots(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.o.RefreshInterval):
		}
		data, _, err := a.readRoots()
		if err == nil {
			err = a.copyXDSRoots(data)
		}
		if err != nil {
			a.o.Log.Info("cannot refresh the roots for the application's xDS stream; keeping the file", "error", err.Error())
		}
	}
}

// tokenFile sends the token in the file as "authorization: Bearer", read
// for every stream, and only over a secure transport.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("the token file %s is empty", string(f))
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }

func errString(err error) string {
	if err == nil {
		return "closed by the server"
	}
	return err.Error()
}

// secretType is SDS's type URL. It is written out rather than taken from
// go-control-plane's pkg/resource, which would link every Envoy config
// proto (listeners, routes, HTTP filters) into the agent for one string.
var secretType = "type.googleapis.com/" + string((&tlsv3.Secret{}).ProtoReflect().Descriptor().FullName())
