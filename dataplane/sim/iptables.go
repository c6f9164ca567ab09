package sim

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NAT is the nat table of one IP family of a pod's network namespace, parsed
// from iptables-restore input (what weft-init feeds to iptables-restore or
// ip6tables-restore). Only the nat table is read: it is the only one
// weft-init writes, and the only one that decides capture.
//
// The walk evaluates it the way netfilter does for the first packet of a
// TCP connection (iptables(8), iptables-extensions(8)):
//
//   - a locally generated connection traverses nat OUTPUT; one arriving from
//     the network traverses nat PREROUTING. A connection to a local address
//     (over lo) is NATed once, in OUTPUT: conntrack has bound it before it
//     reaches PREROUTING, so PREROUTING's rules never see it.
//   - rules are tried in order; a user chain is entered by -j CHAIN and left
//     by RETURN or by falling off its end; RETURN or the end of a built-in
//     chain applies the chain's policy (ACCEPT in the nat table).
//   - REDIRECT --to-ports P sends the connection to port P of this host:
//     "locally generated packets are mapped to the localhost address
//     (127.0.0.1 for IPv4 and ::1 for IPv6)", others to the primary address
//     of the incoming interface (iptables-extensions(8), REDIRECT). The
//     original destination stays readable with SO_ORIGINAL_DST, which is
//     what Envoy's original_dst listener filter reads.
//   - -m owner matches only in OUTPUT (and POSTROUTING): a packet from the
//     network has no local owner.
//
// A nil *NAT (no rules for a family) captures nothing: that is what a pod
// without ip6tables rules does with IPv6.
type NAT struct {
	chains   map[string][]natRule
	policies map[string]string
}

type natRule struct {
	text string // as written, for the trace
	// conditions; neg* invert them ("!" before the option)
	proto                string
	negProto             bool
	dport                int
	negDport             bool
	src, dst             netip.Prefix
	negSrc, negDst       bool
	inIface, outIface    string
	negIn, negOut        bool
	uidOwner, gidOwner   int // -1: not set
	negUID, negGID       bool
	target               string
	toPort               int
	hasSrc, hasDst       bool
	hasInIface, hasOutIf bool
}

// ParseNAT reads the *nat section of iptables-restore input. It refuses what
// it does not understand, so that a rule the simulator would misread cannot
// silently pass. Text without a *nat section gives nil (no capture).
func ParseNAT(text string) (*NAT, error) {
	var n *NAT
	inNat := false
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
			if inNat && n == nil {
				n = &NAT{chains: map[string][]natRule{}, policies: map[string]string{}}
			}
			continue
		case !inNat:
			continue
		case line == "COMMIT":
			inNat = false
			continue
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("line %d: bad chain declaration %q", i+1, line)
			}
			n.chains[f[0]] = n.chains[f[0]][:0:0]
			n.policies[f[0]] = f[1]
			continue
		}
		r, chain, err := parseRule(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		if _, ok := n.chains[chain]; !ok {
			return nil, fmt.Errorf("line %d: chain %s is not declared", i+1, chain)
		}
		n.chains[chain] = append(n.chains[chain], r)
	}
	if n != nil {
		for _, rules := range n.chains {
			for _, r := range rules {
				if _, builtin := map[string]bool{"RETURN": true, "ACCEPT": true, "DROP": true, "REDIRECT": true}[r.target]; !builtin {
					if _, ok := n.chains[r.target]; !ok {
						return nil, fmt.Errorf("rule %q jumps to undeclared chain %s", r.text, r.target)
					}
				}
			}
		}
	}
	return n, nil
}

func parseRule(line string) (natRule, string, error) {
	r := natRule{text: line, uidOwner: -1, gidOwner: -1}
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "-A" {
		return r, "", fmt.Errorf("only -A rules are understood: %q", line)
	}
	chain := f[1]
	neg := false
	next := func(i *int) (string, error) {
		*i++
		if *i >= len(f) {
			return "", fmt.Errorf("%q: %s needs a value", line, f[*i-1])
		}
		return f[*i], nil
	}
	for i := 2; i < len(f); i++ {
		tok := f[i]
		if tok == "!" {
			neg = true
			continue
		}
		var v string
		var err error
		switch tok {
		case "-m", "--match":
			if v, err = next(&i); err == nil && v != "owner" && v != "tcp" && v != "comment" {
				err = fmt.Errorf("%q: match module %s is not understood", line, v)
			}
		case "--comment":
			_, err = next(&i)
			// a quoted comment may hold blanks: skip to its closing quote
			if err == nil && strings.HasPrefix(f[i], `"`) && (len(f[i]) == 1 || !strings.HasSuffix(f[i], `"`)) {
				for i+1 < len(f) && !strings.HasSuffix(f[i], `"`) {
					i++
				}
			}
		case "-p", "--protocol":
			v, err = next(&i)
			r.proto, r.negProto = v, neg
		case "--dport", "--destination-port":
			v, err = next(&i)
			if err == nil {
				r.dport, err = strconv.Atoi(v)
			}
			r.negDport = neg
		case "-s", "--source":
			v, err = next(&i)
			if err == nil {
				r.src, err = parsePrefix(v)
			}
			r.hasSrc, r.negSrc = true, neg
		case "-d", "--destination":
			v, err = next(&i)
			if err == nil {
				r.dst, err = parsePrefix(v)
			}
			r.hasDst, r.negDst = true, neg
		case "-i", "--in-interface":
			v, err = next(&i)
			r.inIface, r.hasInIface, r.negIn = v, true, neg
		case "-o", "--out-interface":
			v, err = next(&i)
			r.outIface, r.hasOutIf, r.negOut = v, true, neg
		case "--uid-owner":
			v, err = next(&i)
			if err == nil {
				r.uidOwner, err = strconv.Atoi(v)
			}
			r.negUID = neg
		case "--gid-owner":
			v, err = next(&i)
			if err == nil {
				r.gidOwner, err = strconv.Atoi(v)
			}
			r.negGID = neg
		case "-j", "--jump":
			r.target, err = next(&i)
		case "--to-ports", "--to-port":
			v, err = next(&i)
			if err == nil {
				r.toPort, err = strconv.Atoi(v)
			}
		default:
			err = fmt.Errorf("%q: option %s is not understood", line, tok)
		}
		if err != nil {
			return r, "", err
		}
		neg = false
	}
	if r.target == "" {
		return r, "", fmt.Errorf("%q: no -j target", line)
	}
	if r.target == "REDIRECT" && r.toPort == 0 {
		return r, "", fmt.Errorf("%q: REDIRECT without --to-ports", line)
	}
	return r, chain, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen()), err
}

// Packet is the first packet of a TCP connection as the nat table sees it.
type Packet struct {
	Src, Dst netip.AddrPort
	In, Out  string // interfaces: "lo" or "eth0"; "" when not known at this hook
	UID, GID int    // the owning socket's user and group, or -1 (not local)
}

// NATVerdict is what the nat table decided for a connection.
type NATVerdict struct {
	RedirectTo int    // REDIRECT --to-ports, or 0
	Dropped    bool   // DROP
	Rule       string // the deciding rule, or "" for the chain policy
}

// Eval runs a built-in chain (OUTPUT or PREROUTING) for p. A nil NAT
// captures nothing.
func (n *NAT) Eval(hook string, p Packet) NATVerdict {
	if n == nil {
		return NATVerdict{}
	}
	v, _ := n.run(hook, p, 0)
	return v
}

// run walks one chain; done reports a terminal decision. A chain left by
// RETURN (or by its end) reports the RETURN rule, so that the trace can
// say which rule let a connection through uncaptured.
func (n *NAT) run(chain string, p Packet, depth int) (v NATVerdict, done bool) {
	if depth > 16 {
		return NATVerdict{Dropped: true, Rule: "jump depth exceeded"}, true
	}
	last := ""
	for _, r := range n.chains[chain] {
		if !r.matches(p) {
			continue
		}
		switch r.target {
		case "RETURN":
			return NATVerdict{Rule: r.text}, depth == 0
		case "ACCEPT":
			return NATVerdict{Rule: r.text}, true
		case "DROP":
			return NATVerdict{Dropped: true, Rule: r.text}, true
		case "REDIRECT":
			return NATVerdict{RedirectTo: r.toPort, Rule: r.text}, true
		default:
			sub, done := n.run(r.target, p, depth+1)
			if done {
				return sub, true
			}
			if sub.Rule != "" {
				last = sub.Rule
			}
		}
	}
	return NATVerdict{Rule: last}, depth == 0
}

func (r natRule) matches(p Packet) bool {
	if r.proto != "" && (r.proto == "tcp" || r.proto == "all") == r.negProto {
		return false
	}
	if r.dport != 0 && (int(p.Dst.Port()) == r.dport) == r.negDport {
		return false
	}
	if r.hasSrc && (r.src.Contains(p.Src.Addr()) && r.src.Addr().Is4() == p.Src.Addr().Is4()) == r.negSrc {
		return false
	}
	if r.hasDst && (r.dst.Contains(p.Dst.Addr()) && r.dst.Addr().Is4() == p.Dst.Addr().Is4()) == r.negDst {
		return false
	}
	if r.hasInIface && (p.In == r.inIface) == r.negIn {
		return false
	}
	if r.hasOutIf && (p.Out == r.outIface) == r.negOut {
		return false
	}
	// -m owner: a packet without a local socket matches neither the owner
	// nor "! owner" (the module only applies to locally generated packets).
	if r.uidOwner >= 0 && (p.UID < 0 || (p.UID == r.uidOwner) == r.negUID) {
		return false
	}
	if r.gidOwner >= 0 && (p.GID < 0 || (p.GID == r.gidOwner) == r.negGID) {
		return false
	}
	return true
}
