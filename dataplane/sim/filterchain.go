package sim

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// Seen is what a listener knows of a connection when it picks a filter
// chain: the addresses, and what its listener filters found.
type Seen struct {
	// Local is the destination: after the original_dst listener filter,
	// the connection's original destination.
	Local netip.AddrPort
	// Remote is the peer (direct and, for filter chains, the same).
	Remote netip.AddrPort
	// TransportProtocol is "tls" when tls_inspector saw a ClientHello,
	// else "raw_buffer" (Envoy's default when no listener filter set it:
	// ActiveTcpSocket::newConnection in
	// source/common/listener_manager/active_tcp_socket.cc).
	TransportProtocol string
	// ServerName (SNI) and ALPN, from tls_inspector; or ALPN "http/1.1" /
	// "h2c" from http_inspector on plaintext.
	ServerName string
	ALPN       []string
}

// MatchFilterChain picks a listener's filter chain as Envoy does when the
// listener has no filter_chain_matcher:
// FilterChainManagerImpl::findFilterChain and the findFilterChainFor*
// functions it calls, in
// source/common/listener_manager/filter_chain_manager_impl.cc. The chains
// form a tree, one level per criterion, in this order:
//
//  1. destination_port: the chains naming the port, else those naming none.
//     When some chain names the port but none of them matches deeper, the
//     default chain is used: Envoy does not fall back to the chains
//     without a port.
//  2. prefix_ranges (destination IP): the longest prefix that contains the
//     address (no ranges = 0.0.0.0/0 and ::/0).
//  3. server_names: the exact SNI, else the longest "*.suffix", else the
//     chains without names.
//  4. transport_protocol: the detected one, else the chains without.
//  5. application_protocols: the first ALPN the client offered, in its
//     order, that some chain names; else the chains without.
//  6. direct_source_prefix_ranges, 7. source_type (SAME_IP_OR_LOOPBACK /
//     EXTERNAL before ANY), 8. source_prefix_ranges (longest), 9.
//     source_ports (exact, else none).
//
// At every level only the best-matching subtree is searched: a connection
// that fails below it gets the default chain (nil when there is none), even
// if a less specific sibling would have matched. Envoy refuses listeners
// whose chains have identical matches, so one chain remains; if several
// do, the error says so.
func MatchFilterChain(l *listenerv3.Listener, s Seen) (*listenerv3.FilterChain, error) {
	chains := l.GetFilterChains()
	var byPort []*listenerv3.FilterChain
	for _, fc := range chains {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == uint32(s.Local.Port()) && fc.GetFilterChainMatch().GetDestinationPort() != nil {
			byPort = append(byPort, fc)
		}
	}
	if len(byPort) == 0 {
		for _, fc := range chains {
			if fc.GetFilterChainMatch().GetDestinationPort() == nil {
				byPort = append(byPort, fc)
			}
		}
	}
	cands := byPort
	for _, level := range []func([]*listenerv3.FilterChain, Seen) []*listenerv3.FilterChain{
		byDestinationIP, byServerName, byTransport, byALPN, byDirectSource, bySourceType, bySourceIP, bySourcePort,
	} {
		if len(cands) == 0 {
			break
		}
		cands = level(cands, s)
	}
	switch len(cands) {
	case 0:
		return l.GetDefaultFilterChain(), nil
	case 1:
		return cands[0], nil
	}
	names := make([]string, len(cands))
	for i, c := range cands {
		names[i] = c.GetName()
	}
	return nil, fmt.Errorf("filter chains %s match identically (Envoy would reject the listener)", strings.Join(names, ", "))
}

// longestPrefix keeps the chains whose ranges (from get) hold a's longest
// matching prefix; an empty list is the catch-all /0 of both families.
func longestPrefix(cands []*listenerv3.FilterChain, a netip.Addr, get func(*listenerv3.FilterChainMatch) []*corev3.CidrRange) []*listenerv3.FilterChain {
	best, out := -1, []*listenerv3.FilterChain(nil)
	for _, fc := range cands {
		bits := -1
		ranges := get(fc.GetFilterChainMatch())
		if len(ranges) == 0 {
			bits = 0
		}
		for _, r := range ranges {
			p, err := cidrPrefix(r)
			if err == nil && p.Addr().Is4() == a.Unmap().Is4() && p.Contains(a.Unmap()) && p.Bits() > bits {
				bits = p.Bits()
			}
		}
		switch {
		case bits < 0 || bits < best:
		case bits > best:
			best, out = bits, []*listenerv3.FilterChain{fc}
		default:
			out = append(out, fc)
		}
	}
	return out
}

func cidrPrefix(r *corev3.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, err
	}
	bits := a.BitLen()
	if r.GetPrefixLen() != nil {
		bits = int(r.GetPrefixLen().GetValue())
	}
	return a.Prefix(bits)
}

func byDestinationIP(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	return longestPrefix(c, s.Local.Addr(), (*listenerv3.FilterChainMatch).GetPrefixRanges)
}

func byDirectSource(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	return longestPrefix(c, s.Remote.Addr(), (*listenerv3.FilterChainMatch).GetDirectSourcePrefixRanges)
}

func bySourceIP(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	return longestPrefix(c, s.Remote.Addr(), (*listenerv3.FilterChainMatch).GetSourcePrefixRanges)
}

// byServerName: FilterChainManagerImpl::findFilterChainForServerName. A
// "*.example.com" entry is stored as ".example.com" and tried from the
// longest suffix of the SNI to the shortest.
func byServerName(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	sni := strings.ToLower(s.ServerName)
	pick := func(want string) []*listenerv3.FilterChain {
		var out []*listenerv3.FilterChain
		for _, fc := range c {
			for _, n := range fc.GetFilterChainMatch().GetServerNames() {
				n = strings.ToLower(n)
				if strings.HasPrefix(n, "*.") {
					n = n[1:]
				}
				if n == want {
					out = append(out, fc)
					break
				}
			}
		}
		return out
	}
	if sni != "" {
		if out := pick(sni); len(out) > 0 {
			return out
		}
		for pos := indexFrom(sni, '.', 1); pos >= 0 && pos < len(sni)-1; pos = indexFrom(sni, '.', pos+1) {
			if out := pick(sni[pos:]); len(out) > 0 {
				return out
			}
		}
	}
	return without(c, func(m *listenerv3.FilterChainMatch) bool { return len(m.GetServerNames()) > 0 })
}

func byTransport(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, fc := range c {
		if fc.GetFilterChainMatch().GetTransportProtocol() == s.TransportProtocol {
			out = append(out, fc)
		}
	}
	if len(out) > 0 {
		return out
	}
	return without(c, func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() != "" })
}

// byALPN: findFilterChainForApplicationProtocols tries the client's
// protocols in the client's order.
func byALPN(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	for _, p := range s.ALPN {
		var out []*listenerv3.FilterChain
		for _, fc := range c {
			if slices.Contains(fc.GetFilterChainMatch().GetApplicationProtocols(), p) {
				out = append(out, fc)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return without(c, func(m *listenerv3.FilterChainMatch) bool { return len(m.GetApplicationProtocols()) > 0 })
}

// bySourceType: findFilterChainForSourceTypes. A local connection is one
// whose peer is a loopback address or the local address itself
// (Network::Utility::isSameIpOrLoopback).
func bySourceType(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	local := s.Remote.Addr().IsLoopback() || s.Remote.Addr() == s.Local.Addr()
	of := func(t listenerv3.FilterChainMatch_ConnectionSourceType) []*listenerv3.FilterChain {
		var out []*listenerv3.FilterChain
		for _, fc := range c {
			if fc.GetFilterChainMatch().GetSourceType() == t {
				out = append(out, fc)
			}
		}
		return out
	}
	if out := of(listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK); local && len(out) > 0 {
		return out
	}
	if out := of(listenerv3.FilterChainMatch_EXTERNAL); !local && len(out) > 0 {
		return out
	}
	return of(listenerv3.FilterChainMatch_ANY)
}

func bySourcePort(c []*listenerv3.FilterChain, s Seen) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, fc := range c {
		if slices.Contains(fc.GetFilterChainMatch().GetSourcePorts(), uint32(s.Remote.Port())) {
			out = append(out, fc)
		}
	}
	if len(out) > 0 {
		return out
	}
	return without(c, func(m *listenerv3.FilterChainMatch) bool { return len(m.GetSourcePorts()) > 0 })
}

func without(c []*listenerv3.FilterChain, set func(*listenerv3.FilterChainMatch) bool) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, fc := range c {
		if !set(fc.GetFilterChainMatch()) {
			out = append(out, fc)
		}
	}
	return out
}

// indexFrom is the index of b in s at or after from, or -1.
func indexFrom(s string, b byte, from int) int {
	if from >= len(s) {
		return -1
	}
	if i := strings.IndexByte(s[from:], b); i >= 0 {
		return from + i
	}
	return -1
}
