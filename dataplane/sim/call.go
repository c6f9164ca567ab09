package sim

import (
	"fmt"
	"net/netip"
	"strings"
)

// Protocol is what the application speaks on the connection.
type Protocol string

const (
	HTTP1     Protocol = "http/1.1"
	H2C       Protocol = "h2c"  // HTTP/2 with prior knowledge, no TLS
	GRPC      Protocol = "grpc" // h2c with content-type application/grpc
	WebSocket Protocol = "websocket"
	TCP       Protocol = "tcp" // opaque, the client speaks first
	// ServerFirst is a TCP protocol where the server speaks first (MySQL,
	// SMTP, FTP): the client sends nothing until it has the greeting.
	ServerFirst Protocol = "server-first"
)

func (p Protocol) isHTTP() bool { return p == HTTP1 || p == H2C || p == GRPC || p == WebSocket }

// AppTLS is TLS the application itself originates (not the mesh's).
type AppTLS struct {
	SNI  string
	ALPN []string
}

// Call is one connection (and, for HTTP, one request on it).
type Call struct {
	// From is the calling pod, "namespace/name"; empty for a caller outside
	// the cluster at FromAddr.
	From     string
	FromAddr netip.Addr
	// To is "host:port": a DNS name of the World, a cluster IP or a pod IP
	// (IPv6 in brackets).
	To string
	// IPv6 picks the IPv6 address of a name that has both.
	IPv6     bool
	Protocol Protocol
	TLS      *AppTLS
	// HTTP request; Host defaults to To.
	Method, Path, Host string
	Headers            map[string]string
	// EmptyBuckets: the caller has sent more than any local rate limit
	// lets through, so every bucket the call takes a token from is empty
	// (Verdict.RateLimits says which, and whether the filter enforces).
	EmptyBuckets bool
}

// Kind is the outcome of a walk.
type Kind string

const (
	// Delivered: the application accepted the connection (or request).
	Delivered Kind = "Delivered"
	// PassthroughPlaintext: delivered to a pod of the World, but the
	// caller's sidecar let it out through a passthrough cluster, in
	// plaintext: outside the mesh.
	PassthroughPlaintext Kind = "PassthroughPlaintext"
	// Denied: RBAC refused it (HTTP 403 or a reset), or Envoy answered 403
	// for another reason (an upgrade no route allows).
	Denied Kind = "Denied"
	// NoRoute: no virtual host, route or cluster (HTTP 404/503 NR/NC), or a
	// connection no filter chain takes.
	NoRoute Kind = "NoRoute"
	// Blackholed: sent to a cluster without endpoints.
	Blackholed Kind = "Blackholed"
	// TLSFailure: a handshake fails (no client certificate, unexpected
	// server identity, plaintext to a TLS chain, TLS to a plaintext app).
	TLSFailure Kind = "TLSFailure"
	// Loop: the connection came back to a listener it had passed, or more
	// than MaxHops listeners took it.
	Loop Kind = "Loop"
	// Refused: nothing listens at the address (connection refused).
	Refused Kind = "Refused"
	// Reset: Envoy or the network closed the connection for another reason
	// (listener filter timeout, not HTTP on an HTTP chain, no endpoint).
	Reset Kind = "Reset"
	// Responded: Envoy answered itself (direct_response or redirect).
	Responded Kind = "Responded"
	// Invalid: the inputs cannot be walked (unknown pod, bad address).
	Invalid Kind = "Invalid"
	// RateLimited: a local rate limit refused the request (its status
	// code, or HTTP 200 with a grpc-status for gRPC).
	RateLimited Kind = "RateLimited"
)

// Verdict says how a walk ended.
type Verdict struct {
	Kind Kind
	// Pod and Port: where it was delivered (Pod is "" for an address
	// outside the World, then Addr says where).
	Pod  string
	Port uint16
	Addr netip.AddrPort
	// MTLS: the last network leg was mesh mTLS, terminated by the
	// destination's sidecar; ClientIdentity is the caller's certificate
	// identity that sidecar saw.
	MTLS           bool
	ClientIdentity string
	// Status is the HTTP status Envoy answered with, when it did.
	Status int
	// Body is a direct response's inline body (Responded).
	Body string
	// Policy is the RBAC policy (or filter) that decided a Denied.
	Policy string
	// Reason says why, in words.
	Reason string
	// Split is the weighted distribution a route or tcp_proxy chose from,
	// at the first hop that had one ("cluster=weight"); the walk follows
	// the heaviest.
	Split []string
	// RequestHeaders are the headers of the HTTP request the application
	// received, as the last sidecar forwarded them (nil for TCP).
	RequestHeaders map[string]string
	// ResponseHeaders are the headers the proxies on the way back set on
	// the application's response (which itself sets none), names in lower
	// case; empty when none do.
	ResponseHeaders map[string]string
	// Location is a redirect's Location header (Responded 3xx).
	Location string
	// Mirrors are the clusters a route copies the request to, with the
	// share copied ("cluster=25%"), at the hops that had any.
	Mirrors []string
	// Upstream is the first cluster the caller's sidecar sent the call
	// through, with the limits, detectors and hash Envoy applies there
	// (nil when no outbound cluster was reached).
	Upstream *Upstream
	// RateLimits are the local rate limit filters the call passed, in
	// order, with the buckets each takes a token from.
	RateLimits []RateLimit
	// Route is what the caller's sidecar's route applied besides the
	// cluster: timeouts, retries, fault, mirrors (nil when no outbound
	// route was taken).
	Route *RoutePolicy
}

func (v Verdict) String() string {
	var b strings.Builder
	b.WriteString(string(v.Kind))
	switch v.Kind {
	case Delivered, PassthroughPlaintext:
		if v.Pod != "" {
			fmt.Fprintf(&b, " to %s:%d", v.Pod, v.Port)
		} else {
			fmt.Fprintf(&b, " to %s (outside the World)", v.Addr)
		}
		if v.MTLS {
			fmt.Fprintf(&b, " over mTLS, client %s", v.ClientIdentity)
		} else {
			b.WriteString(" in plaintext")
		}
	}
	if v.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", v.Status)
	}
	if v.Policy != "" {
		fmt.Fprintf(&b, " by %s", v.Policy)
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, ": %s", v.Reason)
	}
	if len(v.Split) > 0 {
		fmt.Fprintf(&b, " [split %s]", strings.Join(v.Split, " "))
	}
	return b.String()
}

// Result is a walk: its trace and verdict.
type Result struct {
	Trace   []string
	Verdict Verdict
	// AccessLog holds the lines the sidecars on the way wrote, in the
	// order Envoy writes them (the innermost stream ends first).
	AccessLog []AccessLogLine
}

func (r Result) String() string {
	return strings.Join(r.Trace, "\n") + "\n=> " + r.Verdict.String()
}
