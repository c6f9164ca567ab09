//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// nftRules lists, through netlink, every table, chain and rule in the
// network namespace: what weft-init's nftables backend left there.
func nftRules(t *testing.T, netns string) string {
	t.Helper()
	f, err := os.Open("/run/netns/" + netns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, table := range tables {
		fmt.Fprintf(&b, "table %d %s\n", table.Family, table.Name)
		chains, err := c.ListChainsOfTableFamily(table.Family)
		if err != nil {
			t.Fatal(err)
		}
		for _, chain := range chains {
			if chain.Table.Name != table.Name {
				continue
			}
			fmt.Fprintf(&b, "  chain %s\n", chain.Name)
			rules, err := c.GetRules(table, chain)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rules {
				b.WriteString("   ")
				for _, e := range r.Exprs {
					fmt.Fprintf(&b, " %T%+v", e, e)
				}
				b.WriteString("\n")
			}
		}
	}
	if !strings.Contains(b.String(), "table 2 weft") || !strings.Contains(b.String(), "table 10 weft") {
		t.Errorf("no ip and ip6 weft tables in %s:\n%s", netns, b.String())
	}
	return b.String()
}
