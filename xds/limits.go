package xds

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Limits: every cap on what a client can make the server hold or do. Each
// is sized for the largest honest client and says why; docs/design/070
// (the threat model) says whom each one stops.

// MaxNackMessageBytes bounds a proxy's NACK message as the server keeps it
// (registry, logs) and reports it (policy status). Envoy's own messages are
// a few hundred bytes; a condition message may be 32,768 bytes at most
// (metav1.Condition), and one policy collects messages from every replica.
const MaxNackMessageBytes = 1024

// maxNackResources is how many rejected resource names a NACK's
// attribution lists.
const maxNackResources = 5

// truncate cuts s to at most n bytes on a rune boundary, saying so.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "… (truncated)"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// describe attributes a NACK: which proxy, which type and resources.
func (n *Nack) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy %s rejected %s", n.Node, shortType(n.Type))
	if len(n.Resources) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(n.Resources, ", "))
		if n.MoreResources > 0 {
			fmt.Fprintf(&b, " and %d more", n.MoreResources)
		}
	}
	fmt.Fprintf(&b, ": %s", n.Message)
	return b.String()
}

// nackResources lists up to maxNackResources names of a rejected response,
// sorted, and how many more there were.
func nackResources(set map[string]string, removed []string) ([]string, int) {
	names := make([]string, 0, len(set)+len(removed))
	for n := range set {
		names = append(names, n)
	}
	names = append(names, removed...)
	sort.Strings(names)
	if len(names) > maxNackResources {
		return names[:maxNackResources], len(names) - maxNackResources
	}
	return names, 0
}
