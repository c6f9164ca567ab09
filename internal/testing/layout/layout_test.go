// Package layout holds the test that keeps weft's house in shape: the
// import rules that README's layout table states.
package layout

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/weftmesh/weft"

// floors, lowest first. A package may import packages on its own floor or
// below, never above: the pod contract and the API at the bottom, then the
// pure translation, the pure cores beside it, the servers, the pod-side and
// CLI clients, the controller process, the test harness, and the mains.
// The first prefix that matches a package's path (relative to the module)
// gives its floor; a package that none matches fails the test, so a new
// folder has to be placed.
var floors = [][]string{
	{"dataplane", "crds/v1alpha1", "internal/version"},
	{"translator/ir"},
	{"translator/envoy", "dataplane/sim"},
	{"translator", "capture", "certs"},
	{"webhook", "xds"},
	{"internal/certagent", "internal/cli"},
	{"internal/controller"},
	{"internal/testing", "translator/testmesh", "test/e2e", "config", "charts"},
	{"cmd", "hack"},
}

// forbidden are imports that a floor rule alone would allow but the design
// does not: translation is pure (no API server client — decoding with
// client-go's scheme is pure —, no gRPC server, no
// certificates), the simulator checks the builders and so never imports
// them, the pod contract is the standard library only, and weft-init and
// the agent stay small.
var forbidden = map[string][]string{
	"dataplane":          {"!std"},
	"translator":         {"sigs.k8s.io/controller-runtime", "k8s.io/client-go/rest", "k8s.io/client-go/tools", "google.golang.org/grpc", module + "/xds", module + "/certs", module + "/webhook"},
	"dataplane/sim":      {module + "/translator", module + "/webhook", module + "/xds", module + "/capture"},
	"capture":            {"github.com/envoyproxy"},
	"internal/certagent": {module + "/xds", module + "/translator", "github.com/envoyproxy/go-control-plane/envoy/config/listener"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	touchSources(t, root)
	cmd := exec.Command("go", append([]string{"list", "-json=ImportPath,Imports,Deps,Standard"}, args...)...)
	cmd.Dir = root
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	for dec := json.NewDecoder(&out); dec.More(); {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// touchSources reads every Go file of the module (nested modules and bin/
// aside): go test caches a result by the files the test opened, and the
// go list this test runs opens them in another process.
func touchSources(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil || d.Name() == "bin" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" {
				return filepath.SkipDir
			}
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func under(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }

// floor returns the floor of a module-relative path, most specific prefix
// first (dataplane/sim sits above dataplane).
func floor(path string) int {
	best, bestLen := -1, -1
	for i, ps := range floors {
		for _, p := range ps {
			if under(path, p) && len(p) > bestLen {
				best, bestLen = i, len(p)
			}
		}
	}
	return best
}

func rule(path string) []string {
	best, bestLen := []string(nil), -1
	for p, r := range forbidden {
		if under(path, p) && len(p) > bestLen {
			best, bestLen = r, len(p)
		}
	}
	return best
}

// TestImportsRunDownward checks every package's own imports (tests may
// reach anywhere, as they assemble real parts).
func TestImportsRunDownward(t *testing.T) {
	for _, p := range list(t, "./...") {
		path, _ := rel(p.ImportPath)
		f := floor(path)
		if f < 0 {
			t.Errorf("%s is on no floor: add its folder to floors (and README's layout table)", path)
			continue
		}
		for _, imp := range p.Imports {
			if ip, ok := rel(imp); ok {
				if g := floor(ip); g > f {
					t.Errorf("%s (floor %d) imports %s (floor %d): imports run downward", path, f, ip, g)
				}
			}
			for _, bad := range rule(path) {
				if bad == "!std" {
					if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
						t.Errorf("%s imports %s: it is the standard library only", path, imp)
					}
				} else if under(imp, bad) && !(bad == module+"/translator" && under(path, "translator")) {
					t.Errorf("%s imports %s, which it must not", path, imp)
				}
			}
		}
	}
}

// TestSmallBinaries: weft-init and `weft agent` link neither the xDS
// server nor the translator (nor, for weft-init, any Envoy proto).
func TestSmallBinaries(t *testing.T) {
	for _, c := range []struct {
		pkg    string
		banned []string
	}{
		{"./cmd/weft-init", []string{module + "/xds", module + "/translator", "github.com/envoyproxy"}},
		{"./internal/certagent", []string{module + "/xds", module + "/translator", "github.com/envoyproxy/go-control-plane/envoy/config/listener", "github.com/envoyproxy/go-control-plane/pkg/server"}},
	} {
		ps := list(t, "-deps", c.pkg)
		for _, p := range ps {
			if slices.ContainsFunc(c.banned, func(b string) bool { return under(p.ImportPath, b) }) {
				t.Errorf("%s links %s", c.pkg, p.ImportPath)
			}
		}
	}
}
