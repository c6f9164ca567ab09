// Package sim is weft's traffic simulator: it walks one request end to end
// through the pods of a World — the source pod's iptables capture rules, its
// sidecar's Envoy listeners, filter chains, HTTP routes and clusters, the
// network (kube-proxy for cluster IPs), the destination pod's capture rules
// and sidecar, RBAC, and finally the application's listening socket — and
// says what happens: a trace, one line per hop, and a Verdict.
//
// It reads Envoy resources as protos and capture rules as iptables-restore
// text, and encodes Envoy's and netfilter's behaviour from their
// documentation and source (each function cites what it follows). It
// imports no weft builder, so it is an independent check of what weft
// generates, and it is pure: no clock, no network, no randomness.
//
// Istio's pilot/pkg/simulation/traffic.go is the anchor; this goes further:
// both hops, capture rules, TLS identities, RBAC, IPv6 and loops.
package sim

import (
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// World is everything a walk can meet.
type World struct {
	Pods []*Pod
	// Services are what kube-proxy does with a connection to a cluster IP
	// that no sidecar captured.
	Services []*Service
	// DNS resolves names (as a Call's To or a STRICT_DNS cluster's
	// endpoints) to addresses.
	DNS map[string][]netip.Addr
}

// Pod is one pod's network namespace.
type Pod struct {
	Namespace, Name string
	IPs             []netip.Addr
	// Identity is the SPIFFE ID of the pod's workload certificate (what its
	// sidecar presents); "" for an unmeshed pod.
	Identity string
	// Proxy is the sidecar's configuration; nil for a pod without one.
	Proxy *Resources
	// CaptureV4 and CaptureV6 are the iptables-restore and
	// ip6tables-restore input applied in the pod (nil: none, nothing is
	// captured for that family). Parse them with ParseNAT.
	CaptureV4, CaptureV6 *NAT
	// Apps are the application's listening sockets.
	Apps []AppSocket
}

// AppSocket is a socket the application listens on.
type AppSocket struct {
	Port uint16
	// Bind is the address it binds: 0.0.0.0 (any IPv4), :: (any address,
	// IPv4 too, as Go and Java listen by default), 127.0.0.1 or ::1
	// (loopback only) or one of the pod's IPs.
	Bind netip.Addr
	// TLS: the application terminates TLS itself.
	TLS bool
}

// Resources are a sidecar's xDS resources.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// Service is a Kubernetes Service as kube-proxy implements it: a connection
// to one of ClusterIPs on Port goes to one of the endpoints (the walk takes
// the first, to stay deterministic).
type Service struct {
	Namespace, Name string
	ClusterIPs      []netip.Addr
	Ports           []ServicePort
}

// ServicePort is one port of a Service and its ready endpoints.
type ServicePort struct {
	Port      uint16
	Endpoints []netip.AddrPort
}

// Key names a pod: namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

func (p *Pod) nat(v6 bool) *NAT {
	if v6 {
		return p.CaptureV6
	}
	return p.CaptureV4
}

func (p *Pod) owns(a netip.Addr) bool {
	for _, ip := range p.IPs {
		if ip == a.Unmap() {
			return true
		}
	}
	return false
}

// address is the pod's address of a family.
func (p *Pod) address(v6 bool) (netip.Addr, bool) {
	for _, ip := range p.IPs {
		if ip.Is6() == v6 {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (w *World) pod(key string) *Pod {
	for _, p := range w.Pods {
		if p.Key() == key {
			return p
		}
	}
	return nil
}

func (w *World) podAt(a netip.Addr) *Pod {
	for _, p := range w.Pods {
		if p.owns(a) {
			return p
		}
	}
	return nil
}

// service finds the Service port a cluster IP and port belong to.
func (w *World) service(dst netip.AddrPort) (*Service, *ServicePort) {
	for _, s := range w.Services {
		for _, ip := range s.ClusterIPs {
			if ip != dst.Addr() {
				continue
			}
			for i := range s.Ports {
				if s.Ports[i].Port == dst.Port() {
					return s, &s.Ports[i]
				}
			}
			return s, nil
		}
	}
	return nil, nil
}
