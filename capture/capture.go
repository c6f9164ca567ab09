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
	passthrough, loopback netip.Prefix
}

var (
	ipv4 = family{passthrough: hostPrefix(dataplane.InboundPassthroughSource), loopback: netip.MustParsePrefix("127.0.0.1/32")}
	ipv6 = family{v6: true, passthrough: hostPrefix(dataplane.InboundPassthroughSourceV6), loopback: netip.MustParsePrefix("::1/128")}
)

func hostPrefix(ip string) netip.Prefix {
	a := netip.MustParseAddr(ip)
	return netip.PrefixFrom(a, a.BitLen())
}

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
func Rules(o Options) (string, error) {
	t, err := Plan(o, false)
	if err != nil {
		return "", err
	}
	return t.IPTablesRestore(), nil
}

// RulesV6 returns the ip6tables-restore input for the IPv6 nat table: the
// same capture, with ::6 as the inbound-passthrough source (weft-init adds
// it to lo, where the sidecar can bind it) and ::1 as loopback.
func RulesV6(o Options) (string, error) {
	t, err := Plan(o, true)
	if err != nil {
		return "", err
	}
	return t.IPTablesRestore(), nil
}

// Action is what a rule does with a packet it matches.
type Action int

const (
	// Return leaves the chain: back to the caller, or, in a built-in
	// chain, the packet is not redirected.
	Return Action = iota
	// Jump continues in the chain Rule.Target.
	Jump
	// Redirect sends the connection to Rule.ToPort on the pod itself
	// (iptables' REDIRECT, nftables' redirect).
	Redirect
)

// Owner matches the user or group id of the socket that sends a packet.
type Owner struct {
	ID uint32
	// Not inverts the match: any other id.
	Not bool
}

// Rule is one capture rule in a form that both of weft-init's backends
// read: IPTablesRestore writes it as iptables-restore text (what the
// traffic simulator reads, and --dry-run prints), and weft-init's nftables
// backend turns it into netfilter expressions. Every field that is set
// must match; the zero value of a field matches anything.
type Rule struct {
	// Chain is the chain the rule is in: PREROUTING, OUTPUT, or one of
	// weft's chains.
	Chain string
	// TCP matches TCP packets only.
	TCP bool
	// Source and Dest match the packet's addresses (zero: any).
	Source, Dest netip.Prefix
	// NotDest inverts the Dest match.
	NotDest bool
	// OutLoopback matches packets leaving through lo.
	OutLoopback bool
	// UID and GID match the sending socket's owner (nil: any).
	UID, GID *Owner
	// DPort matches the TCP destination port (0: any; needs TCP).
	DPort  uint16
	Action Action
	// Target is the chain of a Jump; ToPort the port of a Redirect.
	Target string
	ToPort uint16
}

// Table is the capture for one IP family: weft's chains, and the rules of
// the built-in and weft's chains in order.
type Table struct {
	V6 bool
	// Chains are weft's own chains, in the order they are declared.
	Chains []string
	Rules  []Rule
}

// Plan returns the capture rules for one family (v6: IPv6).
func Plan(o Options, v6 bool) (*Table, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	f := ipv4
	if v6 {
		f = ipv6
	}
	t := &Table{V6: v6, Chains: []string{ChainInbound, ChainInboundRedir, ChainOutbound, ChainOutboundRedir}}
	add := func(r Rule) { t.Rules = append(t.Rules, r) }
	uid := func(not bool) *Owner { return &Owner{ID: o.ProxyUID, Not: not} }

	// Inbound: everything that arrives for the pod, except the proxy's own
	// ports and the excluded ones, goes to the inbound listener.
	if !o.NoInbound {
		add(Rule{Chain: "PREROUTING", TCP: true, Action: Jump, Target: ChainInbound})
		for _, p := range sortedPorts(dataplane.ProxyPorts, o.ExcludeInboundPorts) {
			add(Rule{Chain: ChainInbound, TCP: true, DPort: p, Action: Return})
		}
		add(Rule{Chain: ChainInbound, TCP: true, Action: Jump, Target: ChainInboundRedir})
	}
	add(Rule{Chain: ChainInboundRedir, TCP: true, Action: Redirect, ToPort: o.InboundPort})

	// Outbound, in order:
	add(Rule{Chain: "OUTPUT", TCP: true, Action: Jump, Target: ChainOutbound})
	// the proxy talking to its own application for passthrough traffic
	// (source 127.0.0.6 or ::6) must reach the application, not loop back in;
	add(Rule{Chain: ChainOutbound, Source: f.passthrough, OutLoopback: true, Action: Return})
	if !o.NoInbound {
		// the proxy calling a Service whose endpoint is this very pod goes
		// over lo to the pod IP: treat it as inbound, so mTLS and authz
		// apply as for any other caller — through WEFT_INBOUND, whose
		// exclusions (the proxy's own ports, excluded inbound ports) hold
		// for it as for a connection from the network;
		add(Rule{Chain: ChainOutbound, Dest: f.loopback, NotDest: true, OutLoopback: true, UID: uid(false), Action: Jump, Target: ChainInbound})
	}
	// the application talking to itself over loopback is not mesh traffic;
	add(Rule{Chain: ChainOutbound, OutLoopback: true, UID: uid(true), Action: Return})
	// the proxy's own connections (upstreams, xDS) are never captured;
	add(Rule{Chain: ChainOutbound, UID: uid(false), Action: Return})
	if o.ProxyGID != 0 {
		add(Rule{Chain: ChainOutbound, GID: &Owner{ID: o.ProxyGID}, Action: Return})
	}
	add(Rule{Chain: ChainOutbound, Dest: f.loopback, Action: Return})
	// and the user's exclusions.
	for _, c := range sortedPrefixes(o.ExcludeOutboundCIDRs, f.v6) {
		add(Rule{Chain: ChainOutbound, Dest: c, Action: Return})
	}
	for _, p := range sortedPorts(nil, o.ExcludeOutboundPorts) {
		add(Rule{Chain: ChainOutbound, TCP: true, DPort: p, Action: Return})
	}
	add(Rule{Chain: ChainOutbound, Action: Jump, Target: ChainOutboundRedir})
	add(Rule{Chain: ChainOutboundRedir, TCP: true, Action: Redirect, ToPort: o.OutboundPort})
	return t, nil
}

// IPTablesRestore writes the table as iptables-restore (or
// ip6tables-restore) input for the nat table.
func (t *Table) IPTablesRestore() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*nat")
	w(":PREROUTING ACCEPT [0:0]")
	w(":INPUT ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	w(":POSTROUTING ACCEPT [0:0]")
	for _, c := range t.Chains {
		w(":%s - [0:0]", c)
	}
	for _, r := range t.Rules {
		w("%s", r.iptables())
	}
	w("COMMIT")
	return b.String()
}

func (r Rule) iptables() string {
	parts := []string{"-A", r.Chain}
	if r.TCP {
		parts = append(parts, "-p", "tcp")
	}
	if r.Source.IsValid() {
		parts = append(parts, "-s", r.Source.String())
	}
	if r.Dest.IsValid() {
		if r.NotDest {
			parts = append(parts, "!")
		}
		parts = append(parts, "-d", r.Dest.String())
	}
	if r.OutLoopback {
		parts = append(parts, "-o", "lo")
	}
	if r.DPort != 0 {
		parts = append(parts, "--dport", strconv.Itoa(int(r.DPort)))
	}
	for _, o := range []struct {
		flag  string
		owner *Owner
	}{{"--uid-owner", r.UID}, {"--gid-owner", r.GID}} {
		if o.owner == nil {
			continue
		}
		parts = append(parts, "-m", "owner")
		if o.owner.Not {
			parts = append(parts, "!")
		}
		parts = append(parts, o.flag, strconv.FormatUint(uint64(o.owner.ID), 10))
	}
	switch r.Action {
	case Return:
		parts = append(parts, "-j", "RETURN")
	case Jump:
		parts = append(parts, "-j", r.Target)
	case Redirect:
		parts = append(parts, "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(r.ToPort)))
	}
	return strings.Join(parts, " ")
}

func sortedPorts(a, b []uint16) []uint16 {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// sortedPrefixes are the ranges of one family (v6), masked, sorted.
func sortedPrefixes(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == !v6 {
			out = append(out, p.Masked())
		}
	}
	// Sorted by their text, as the rules have always been written.
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
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
