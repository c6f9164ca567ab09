package capture

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

func TestRulesGolden(t *testing.T) {
	cases := map[string]Options{
		"defaults": Defaults(),
		"exclusions": func() Options {
			o := Defaults()
			o.ExcludeInboundPorts = []uint16{9000, 8443, 9000}
			o.ExcludeOutboundPorts = []uint16{5432, 3306}
			o.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("fd00:ec2::254/128")}
			return o
		}(),
		"outbound-only": func() Options { o := Defaults(); o.NoInbound = true; return o }(),
	}
	for name, o := range cases {
		for _, fam := range []struct {
			suffix string
			rules  func(Options) (string, error)
		}{{".rules", Rules}, {".v6.rules", RulesV6}} {
			t.Run(name+fam.suffix, func(t *testing.T) {
				got, err := fam.rules(o)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join("testdata", name+fam.suffix)
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./capture -update, then read it)", err)
				}
				if got != string(want) {
					t.Errorf("rules differ from %s (run with -update and read the diff):\n%s", path, got)
				}
			})
		}
	}
}

// TestRulesV6 checks what differs in the IPv6 rules: the passthrough
// source ::6, loopback ::1, and only IPv6 exclusions.
func TestRulesV6(t *testing.T) {
	o := Defaults()
	o.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	r, err := RulesV6(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-A WEFT_OUTBOUND -s ::6/128 -o lo -j RETURN\n",
		"-A WEFT_OUTBOUND ! -d ::1/128 -o lo -m owner --uid-owner 1337 -j WEFT_INBOUND\n",
		"-A WEFT_OUTBOUND -d ::1/128 -j RETURN\n",
		"-A WEFT_OUTBOUND -d fd00::/8 -j RETURN\n",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("missing %q in\n%s", want, r)
		}
	}
	if strings.Contains(r, "127.0.0") || strings.Contains(r, "10.0.0.0/8") {
		t.Errorf("IPv4 addresses in the IPv6 rules:\n%s", r)
	}
	r4, _ := Rules(o)
	if strings.Contains(r4, "fd00::/8") || strings.Contains(r4, "::") {
		t.Errorf("IPv6 addresses in the IPv4 rules:\n%s", r4)
	}
}

func TestRulesProperties(t *testing.T) {
	o := Defaults()
	o.ExcludeInboundPorts = []uint16{9000}
	o.ExcludeOutboundPorts = []uint16{5432}
	o.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	r, err := Rules(o)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(r, "\n")
	index := func(rule string) int {
		t.Helper()
		for i, l := range lines {
			if l == rule {
				return i
			}
		}
		t.Fatalf("missing rule %q in\n%s", rule, r)
		return -1
	}
	redirectOut := index("-A WEFT_OUTBOUND -j WEFT_OUT_REDIRECT")
	// Every exclusion must come before the catch-all redirect.
	for _, rule := range []string{
		"-A WEFT_OUTBOUND -s 127.0.0.6/32 -o lo -j RETURN",
		"-A WEFT_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
		"-A WEFT_OUTBOUND -m owner --gid-owner 1337 -j RETURN",
		"-A WEFT_OUTBOUND -d 10.0.0.0/8 -j RETURN",
		"-A WEFT_OUTBOUND -p tcp --dport 5432 -j RETURN",
	} {
		if index(rule) > redirectOut {
			t.Errorf("%q comes after the outbound redirect", rule)
		}
	}
	redirectIn := index("-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT")
	for _, p := range []string{"15000", "15001", "15006", "15021", "15090", "9000"} {
		if index("-A WEFT_INBOUND -p tcp --dport "+p+" -j RETURN") > redirectIn {
			t.Errorf("inbound port %s is excluded after the redirect", p)
		}
	}
	index("-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006")
	index("-A WEFT_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001")
	if !strings.HasPrefix(r, "*nat\n") || !strings.HasSuffix(r, "COMMIT\n") {
		t.Errorf("not one nat table block:\n%s", r)
	}
}

func TestValidate(t *testing.T) {
	o := Defaults()
	o.ProxyUID = 0
	if _, err := Rules(o); err == nil || !strings.Contains(err.Error(), "uid must not be 0") {
		t.Errorf("uid 0: got %v", err)
	}
}

func TestParse(t *testing.T) {
	ports, err := ParsePorts(" 8080, 9090 ,,")
	if err != nil || FormatPorts(ports) != "8080,9090" {
		t.Errorf("ParsePorts: %v %v", ports, err)
	}
	for _, bad := range []string{"0", "65536", "http", "80-90"} {
		if _, err := ParsePorts(bad); err == nil || !strings.Contains(err.Error(), "is not a port") {
			t.Errorf("ParsePorts(%q): got %v", bad, err)
		}
	}
	cidrs, err := ParseCIDRs("10.0.0.0/8, 169.254.169.254, fd00::/8")
	if err != nil || FormatCIDRs(cidrs) != "10.0.0.0/8,169.254.169.254/32,fd00::/8" {
		t.Errorf("ParseCIDRs: %v %v", cidrs, err)
	}
	for bad, msg := range map[string]string{"10.0.0.0/33": "is not an IP range", "example.com": "is not an IP range", "::ffff:10.0.0.0/104": "IPv4-mapped"} {
		if _, err := ParseCIDRs(bad); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseCIDRs(%q): got %v, want %q", bad, err, msg)
		}
	}
}
