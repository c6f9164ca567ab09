package main

import "testing"

// TestProfileName: a run's profile names what makes it comparable — the
// sizes (default, large, custom) and the scoping — so that a scoped run
// is never filed beside unscoped ones.
func TestProfileName(t *testing.T) {
	for _, c := range []struct {
		set           []string
		large, scoped bool
		want          string
	}{
		{nil, false, false, "default"},
		{nil, false, true, "default-scoped"},
		{nil, true, false, "large"},
		{nil, true, true, "large-scoped"},
		{[]string{"proxies"}, false, false, "custom"},
		{[]string{"proxies"}, false, true, "custom-scoped"},
		{[]string{"services"}, true, false, "large-custom"},
		{[]string{"memory-gcs"}, true, true, "large-custom-scoped"},
		{[]string{"scoped", "weft-only", "out", "logs", "timeout"}, false, true, "default-scoped"},
	} {
		set := map[string]bool{}
		for _, f := range c.set {
			set[f] = true
		}
		if got := profileName(set, c.large, c.scoped); got != c.want {
			t.Errorf("profileName(%v, large=%t, scoped=%t) = %q, want %q", c.set, c.large, c.scoped, got, c.want)
		}
	}
}
