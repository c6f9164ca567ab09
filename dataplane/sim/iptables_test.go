package sim_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// weftDefaults is weft-init's default rule set (capture's
// testdata/defaults.rules), copied so that these tests check the parser
// against fixed text.
const weftDefaults = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:WEFT_INBOUND - [0:0]
:WEFT_IN_REDIRECT - [0:0]
:WEFT_OUTBOUND - [0:0]
:WEFT_OUT_REDIRECT - [0:0]
-A PREROUTING -p tcp -j WEFT_INBOUND
-A WEFT_INBOUND -p tcp --dport 15000 -j RETURN
-A WEFT_INBOUND -p tcp --dport 15001 -j RETURN
-A WEFT_INBOUND -p tcp --dport 15006 -j RETURN
-A WEFT_INBOUND -p tcp --dport 15021 -j RETURN
-A WEFT_INBOUND -p tcp --dport 15090 -j RETURN
-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -j WEFT_OUTBOUND
-A WEFT_OUTBOUND -s 127.0.0.6/32 -o lo -j RETURN
-A WEFT_OUTBOUND ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j WEFT_IN_REDIRECT
-A WEFT_OUTBOUND -o lo -m owner ! --uid-owner 1337 -j RETURN
-A WEFT_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A WEFT_OUTBOUND -m owner --gid-owner 1337 -j RETURN
-A WEFT_OUTBOUND -d 127.0.0.1/32 -j RETURN
-A WEFT_OUTBOUND -p tcp --dport 5432 -j RETURN
-A WEFT_OUTBOUND -j WEFT_OUT_REDIRECT
-A WEFT_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
`

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestNATEval(t *testing.T) {
	nat, err := sim.ParseNAT(weftDefaults)
	if err != nil {
		t.Fatal(err)
	}
	const pod = "10.1.1.10"
	for _, tc := range []struct {
		name     string
		hook     string
		p        sim.Packet
		redirect int
		rule     string // a substring of the deciding rule; "" = policy
	}{
		{"app to another pod is captured", "OUTPUT",
			sim.Packet{Src: ap(pod + ":40000"), Dst: ap("10.1.1.20:80"), Out: "eth0", UID: 1000, GID: 1000}, 15001, "REDIRECT --to-ports 15001"},
		{"proxy's own upstream is not", "OUTPUT",
			sim.Packet{Src: ap(pod + ":40000"), Dst: ap("10.1.1.20:80"), Out: "eth0", UID: 1337, GID: 1337}, 0, "--uid-owner 1337 -j RETURN"},
		{"excluded outbound port", "OUTPUT",
			sim.Packet{Src: ap(pod + ":40000"), Dst: ap("10.1.1.20:5432"), Out: "eth0", UID: 1000, GID: 1000}, 0, "--dport 5432"},
		{"app to localhost is not", "OUTPUT",
			sim.Packet{Src: ap("127.0.0.1:40000"), Dst: ap("127.0.0.1:8080"), Out: "lo", UID: 1000, GID: 1000}, 0, "! --uid-owner 1337 -j RETURN"},
		{"proxy to its own pod IP over lo goes inbound", "OUTPUT",
			sim.Packet{Src: ap(pod + ":40000"), Dst: ap(pod + ":8080"), Out: "lo", UID: 1337, GID: 1337}, 15006, "REDIRECT --to-ports 15006"},
		{"inbound passthrough source is exempt", "OUTPUT",
			sim.Packet{Src: ap("127.0.0.6:40000"), Dst: ap(pod + ":8080"), Out: "lo", UID: 1337, GID: 1337}, 0, "-s 127.0.0.6/32"},
		{"inbound to an app port", "PREROUTING",
			sim.Packet{Src: ap("10.1.1.20:40000"), Dst: ap(pod + ":8080"), In: "eth0", UID: -1, GID: -1}, 15006, "REDIRECT --to-ports 15006"},
		{"inbound to the readiness port", "PREROUTING",
			sim.Packet{Src: ap("10.1.1.20:40000"), Dst: ap(pod + ":15021"), In: "eth0", UID: -1, GID: -1}, 0, "--dport 15021"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := nat.Eval(tc.hook, tc.p)
			if v.RedirectTo != tc.redirect || !strings.Contains(v.Rule, tc.rule) || (tc.rule == "" && v.Rule != "") {
				t.Errorf("got redirect %d by %q, want %d by a rule containing %q", v.RedirectTo, v.Rule, tc.redirect, tc.rule)
			}
		})
	}
	var none *sim.NAT
	if v := none.Eval("OUTPUT", sim.Packet{Dst: ap("[fd00::1]:80"), UID: 1000}); v.RedirectTo != 0 {
		t.Errorf("no rules captured: %+v", v)
	}
}

func TestParseNATRefusesWhatItDoesNotUnderstand(t *testing.T) {
	for _, bad := range []string{
		"*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m conntrack --ctstate NEW -j RETURN\nCOMMIT\n",
		"*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j NOWHERE\nCOMMIT\n",
		"*nat\n:OUTPUT ACCEPT [0:0]\n-I OUTPUT -j RETURN\nCOMMIT\n",
		"*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j REDIRECT\nCOMMIT\n",
	} {
		if _, err := sim.ParseNAT(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if n, err := sim.ParseNAT("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"); err != nil || n != nil {
		t.Errorf("no nat table: got %v, %v; want nil, nil", n, err)
	}
}
