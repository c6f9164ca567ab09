// Package capture turns traffic-capture options into the iptables rules that
// send a pod's TCP traffic through its sidecar. It is pure: Rules returns the
// text that weft-init feeds to iptables-restore, and RulesV6 the text for
// ip6tables-restore, so the rules can be tested, printed (weft-init
// --dry-run) and reviewed without a network namespace.
//
// Both families are captured: a pod with an IPv6 address whose IPv6
// traffic bypassed the sidecar would bypass Strict mTLS and AuthPolicy.
// The IPv6 rules are the IPv4 ones with ::6 as the inbound-passthrough
// source and ::1 as the loopback address (Istio's istio-iptables does the
// same).
//
// The layout (all in the nat table of the pod's network namespace):
//
//	PREROUTING -p tcp → WEFT_INBOUND:  RETURN for the proxy's own ports and
//	                                   excluded inbound ports, else
//	                                   WEFT_IN_REDIRECT → REDIRECT :15006
//	OUTPUT     -p tcp → WEFT_OUTBOUND: RETURN for the inbound-passthrough
//	                                   source; the proxy to its own pod IP
//	                                   → WEFT_INBOUND; RETURN for the
//	                                   proxy's uid/gid, loopback,
//	                                   excluded ports and CIDRs, else
//	                                   WEFT_OUT_REDIRECT → REDIRECT :15001
package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/dataplane"
)

// Chain names. They are what an operator sees in `iptables -t nat -S`.
const (
	ChainInbound       = "WEFT_INBOUND"
	ChainInboundRedir  = "WEFT_IN_REDIRECT"
	ChainOutbound      = "WEFT_OUTBOUND"
	ChainOutboundRedir = "WEFT_OUT_REDIRECT"
)

// family holds what differs between the IPv4 and IPv6 rules.
type family struct {
	v6 bool
	// passthrough is the source address the sidecar uses towards its own
	// application; loopback the host's loopback address.
	passthrough, loopback string
}

var (
	ipv4 = family{passthrough: dataplane.InboundPassthroughSource + "/32", loopback: "127.0.0.1/32"}
	ipv6 = family{v6: true, passthrough: dataplane.InboundPassthroughSourceV6 + "/128", loopback: "::1/128"}
)

// Options say what to capture.
type Options struct {
	// ProxyUID and ProxyGID are the user and group the proxy runs as; their
	// traffic is never captured, or the proxy would capture itself.
	ProxyUID, ProxyGID uint32
	// InboundPort and OutboundPort are the proxy's capture listeners.
	InboundPort, OutboundPort uint16
	// ExcludeInboundPorts are pod ports whose inbound traffic bypasses the
	// proxy (dataplane.ProxyPorts are always excluded).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports whose outbound traffic
	// bypasses the proxy.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destination ranges that bypass the proxy,
	// IPv4 and IPv6 (each family's rules hold its own).
	ExcludeOutboundCIDRs []netip.Prefix
	// NoInbound turns inbound capture off (outbound only).
	NoInbound bool
}

// Defaults are the options weft-init uses when no flag changes them.
func Defaults() Options {
	return Options{
		ProxyUID:     dataplane.ProxyUID,
		ProxyGID:     dataplane.ProxyGID,
		InboundPort:  dataplane.InboundPort,
		OutboundPort: dataplane.OutboundPort,
	}
}

// Validate reports options that cannot produce working rules.
func (o Options) Validate() error {
	var errs []error
	if o.InboundPort == 0 && !o.NoInbound {
		errs = append(errs, errors.New("the inbound capture port must be 1-65535"))
	}
	if o.OutboundPort == 0 {
		errs = append(errs, errors.New("the outbound capture port must be 1-65535"))
	}
	if o.ProxyUID == 0 {
		errs = append(errs, errors.New("the proxy uid must not be 0: root's traffic would bypass the proxy"))
	}
	return errors.Join(errs...)
}

// Rules returns an iptables-restore input for the IPv4 nat table.
// Restoring it without --noflush replaces the whole nat table of the
// namespace, so running weft-init twice (a restarted init container) leaves
// the same rules.
func Rules(o Options) (string, error) { return rules(o, ipv4) }

// RulesV6 returns the ip6tables-restore input for the IPv6 nat table: the
// same capture, with ::6 as the inbound-passthrough source (weft-init adds
// it to lo, where the sidecar can bind it) and ::1 as loopback.
func RulesV6(o Options) (string, error) { return rules(o, ipv6) }

func rules(o Options, f family) (string, error) {
	if err := o.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*nat")
	w(":PREROUTING ACCEPT [0:0]")
	w(":INPUT ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	w(":POSTROUTING ACCEPT [0:0]")
	for _, c := range []string{ChainInbound, ChainInboundRedir, ChainOutbound, ChainOutboundRedir} {
		w(":%s - [0:0]", c)
	}

	// Inbound: everything that arrives for the pod, except the proxy's own
	// ports and the excluded ones, goes to the inbound listener.
	if !o.NoInbound {
		w("-A PREROUTING -p tcp -j %s", ChainInbound)
		for _, p := range sortedPorts(dataplane.ProxyPorts, o.ExcludeInboundPorts) {
			w("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
		}
		w("-A %s -p tcp -j %s", ChainInbound, ChainInboundRedir)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInboundRedir, o.InboundPort)

	// Outbound, in order:
	w("-A OUTPUT -p tcp -j %s", ChainOutbound)
	// the proxy talking to its own application for passthrough traffic
	// (source 127.0.0.6 or ::6) must reach the application, not loop back in;
	w("-A %s -s %s -o lo -j RETURN", ChainOutbound, f.passthrough)
	if !o.NoInbound {
		// the proxy calling a Service whose endpoint is this very pod goes
		// over lo to the pod IP: treat it as inbound, so mTLS and authz
		// apply as for any other caller — through WEFT_INBOUND, whose
		// exclusions (the proxy's own ports, excluded inbound ports) hold
		// for it as for a connection from the network;
		w("-A %s ! -d %s -o lo -m owner --uid-owner %d -j %s", ChainOutbound, f.loopback, o.ProxyUID, ChainInbound)
	}
	// the application talking to itself over loopback is not mesh traffic;
	w("-A %s -o lo -m owner ! --uid-owner %d -j RETURN", ChainOutbound, o.ProxyUID)
	// the proxy's own connections (upstreams, xDS) are never captured;
	w("-A %s -m owner --uid-owner %d -j RETURN", ChainOutbound, o.ProxyUID)
	if o.ProxyGID != 0 {
		w("-A %s -m owner --gid-owner %d -j RETURN", ChainOutbound, o.ProxyGID)
	}
	w("-A %s -d %s -j RETURN", ChainOutbound, f.loopback)
	// and the user's exclusions.
	for _, c := range sortedPrefixes(o.ExcludeOutboundCIDRs, f.v6) {
		w("-A %s -d %s -j RETURN", ChainOutbound, c)
	}
	for _, p := range sortedPorts(nil, o.ExcludeOutboundPorts) {
		w("-A %s -p tcp --dport %d -j RETURN", ChainOutbound, p)
	}
	w("-A %s -j %s", ChainOutbound, ChainOutboundRedir)
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainOutboundRedir, o.OutboundPort)
	w("COMMIT")
	return b.String(), nil
}

func sortedPorts(a, b []uint16) []uint16 {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// sortedPrefixes are the ranges of one family (v6), masked, sorted.
func sortedPrefixes(ps []netip.Prefix, v6 bool) []string {
	var out []string
	for _, p := range ps {
		if p.Addr().Is4() == !v6 {
			out = append(out, p.Masked().String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ParsePorts reads a comma-separated list of ports, such as "8080,9090".
// Blanks around entries are ignored; an empty string is no ports.
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port: write port numbers 1-65535 separated by commas, such as 8080,9090", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseCIDRs reads a comma-separated list of IPv4 and IPv6 ranges, such as
// "10.0.0.0/8,169.254.169.254/32,fd00::/8". A bare address means that one
// address. IPv4-mapped IPv6 ranges (::ffff:10.0.0.0/104) are refused: no
// IPv6 packet carries such an address, so the exclusion would do nothing.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(f); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP range: write CIDRs separated by commas, such as 10.0.0.0/8,169.254.169.254/32", f)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q is an IPv4-mapped IPv6 range, which no packet carries: write the IPv4 range instead", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// FormatPorts writes ports as ParsePorts reads them.
func FormatPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// FormatCIDRs writes ranges as ParseCIDRs reads them.
func FormatCIDRs(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
