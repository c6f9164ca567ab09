package sim_test

import (
	"os"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/translator"
)

// weftWorld builds a World from translator inputs exactly as weft serves
// them, with the code `weft explain` uses (offline.World): translator.Translate,
// each sidecar's resources as weft-controller builds and checks them, and
// weft-init's capture rules (capture.Rules and capture.RulesV6 of the pod's
// weft-init arguments, weft-init's defaults when the manifest names only
// the sidecar). Every application listens on its Services' target ports,
// bound to [::] (every address of the pod, IPv4 included, as Go and Java
// servers bind by default).
//
// extra are more YAML documents appended to the file's (a policy or a pod
// a test needs beside the file's mesh).
func weftWorld(t *testing.T, path string, extra ...string) *sim.World {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		data = append(data, "\n---\n"+e...)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	w, err := offline.World(in, translator.Translate(in).Mesh)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func podOf(t *testing.T, w *sim.World, key string) *sim.Pod {
	t.Helper()
	for _, p := range w.Pods {
		if p.Key() == key {
			return p
		}
	}
	t.Fatalf("no pod %s", key)
	return nil
}

// walk runs a call and logs its trace.
func walk(t *testing.T, w *sim.World, c sim.Call) sim.Verdict {
	t.Helper()
	r := w.Walk(c)
	from := c.From
	if from == "" {
		from = c.FromAddr.String()
	}
	t.Logf("%s -> %s:\n  %s\n  => %s", from, c.To, strings.Join(r.Trace, "\n  "), r.Verdict)
	return r.Verdict
}
