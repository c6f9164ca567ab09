package main

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/capture"
)

// nftTable is the table weft-init owns in each family (ip weft, ip6 weft).
// It holds nothing but the capture, so replacing it never touches another
// tool's rules.
const nftTable = "weft"

// applyNFTables installs the capture of each family given as one netlink
// batch, which the kernel applies atomically: the whole table or nothing
// (as iptables-restore applies a table). The batch first deletes any weft
// table a previous run left (add, delete, add: the add makes the delete
// valid when there is none), so running weft-init again leaves the same
// rules. netns is the network namespace's file descriptor, or -1 for the
// current one.
func applyNFTables(tables []*capture.Table, netns int) error {
	var opts []nftables.ConnOption
	if netns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range tables {
		if err := addNFTable(c, t); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: the kernel refused the capture rules (is nf_tables available? --backend=iptables uses iptables-restore instead): %w", err)
	}
	return nil
}

func addNFTable(c *nftables.Conn, t *capture.Table) error {
	family := nftables.TableFamilyIPv4
	if t.V6 {
		family = nftables.TableFamilyIPv6
	}
	table := &nftables.Table{Name: nftTable, Family: family}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)

	// The built-in chains become base chains at the nat hooks with the
	// priority of iptables' nat table (dstnat, -100), so the capture runs
	// where iptables' would.
	accept := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		"PREROUTING": c.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept}),
		"OUTPUT": c.AddChain(&nftables.Chain{Name: "output", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept}),
	}
	for _, name := range t.Chains {
		chains[name] = c.AddChain(&nftables.Chain{Name: name, Table: table})
	}
	for i, r := range t.Rules {
		chain := chains[r.Chain]
		if chain == nil {
			return fmt.Errorf("capture rule %d is in chain %q, which the table does not declare (a weft bug)", i, r.Chain)
		}
		exprs, err := nftExprs(r, t.V6)
		if err != nil {
			return fmt.Errorf("capture rule %d (%s): %w", i, r.Chain, err)
		}
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	}
	return nil
}

// nftExprs turns one capture rule into nftables expressions, matches
// first (each loads a value into register 1 and compares it), then the
// verdict. It is what `nft` would build for the rule's iptables form.
func nftExprs(r capture.Rule, v6 bool) ([]expr.Any, error) {
	var e []expr.Any
	cmp := func(op expr.CmpOp, data []byte) { e = append(e, &expr.Cmp{Op: op, Register: 1, Data: data}) }
	if r.TCP || r.DPort != 0 {
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp(expr.CmpOpEq, []byte{unix.IPPROTO_TCP})
	}
	// Addresses: IPv4 source at 12, destination at 16 (4 bytes); IPv6
	// source at 8, destination at 24 (16 bytes).
	addr := func(p netip.Prefix, dst, not bool) error {
		if p.Addr().Is6() != v6 {
			return fmt.Errorf("address %s is not of the table's family", p)
		}
		off, n := uint32(12), uint32(4)
		if v6 {
			off, n = 8, 16
		}
		if dst {
			off += n
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
		if p.Bits() < p.Addr().BitLen() {
			mask := make([]byte, n)
			for i := 0; i < p.Bits(); i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
		}
		op := expr.CmpOpEq
		if not {
			op = expr.CmpOpNeq
		}
		cmp(op, p.Masked().Addr().AsSlice())
		return nil
	}
	if r.Source.IsValid() {
		if err := addr(r.Source, false, false); err != nil {
			return nil, err
		}
	}
	if r.Dest.IsValid() {
		if err := addr(r.Dest, true, r.NotDest); err != nil {
			return nil, err
		}
	}
	if r.OutLoopback {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		cmp(expr.CmpOpEq, ifname("lo"))
	}
	if r.DPort != 0 {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(r.DPort))
	}
	// Owner matches read the sending socket (meta skuid/skgid, in host
	// byte order). In nat OUTPUT every packet seen is a connection's first,
	// sent by a local socket, so the socket-less case (where iptables'
	// inverted owner match would match and nftables' would not) does not
	// arise.
	for _, o := range []struct {
		key   expr.MetaKey
		owner *capture.Owner
	}{{expr.MetaKeySKUID, r.UID}, {expr.MetaKeySKGID, r.GID}} {
		if o.owner == nil {
			continue
		}
		e = append(e, &expr.Meta{Key: o.key, Register: 1})
		op := expr.CmpOpEq
		if o.owner.Not {
			op = expr.CmpOpNeq
		}
		cmp(op, binaryutil.NativeEndian.PutUint32(o.owner.ID))
	}
	switch r.Action {
	case capture.Return:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case capture.Jump:
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Target})
	case capture.Redirect:
		e = append(e,
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.ToPort)},
			&expr.Redir{RegisterProtoMin: 1})
	default:
		return nil, fmt.Errorf("unknown action %d", r.Action)
	}
	return e, nil
}

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ (16) bytes.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
