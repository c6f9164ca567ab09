// Package docscheck holds tests that keep user documentation true to the
// code: a metric an operator alerts on must be documented, and a
// documented metric must exist.
package docscheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// exportedMetrics finds every metric weft's Go code declares for
// Prometheus: the Name of a prometheus *Opts literal, and the name given to
// prometheus.NewDesc. It reads the source rather than a registry because
// a vector with no observed labels is absent from a scrape.
func exportedMetrics(t *testing.T, root string) map[string]string {
	found := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "bin" || n == "testdata" || strings.HasPrefix(n, ".") || (path != root && fileExists(filepath.Join(path, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !isPkg(sel.X, "prometheus") || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				for _, e := range n.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok && isIdent(kv.Key, "Name") {
						if s, ok := stringLit(kv.Value); ok {
							found[s] = rel
						}
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isPkg(sel.X, "prometheus") && sel.Sel.Name == "NewDesc" && len(n.Args) > 0 {
					if s, ok := stringLit(n.Args[0]); ok {
						found[s] = rel
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func isPkg(e ast.Expr, name string) bool { id, ok := e.(*ast.Ident); return ok && id.Name == name }

func isIdent(e ast.Expr, name string) bool { id, ok := e.(*ast.Ident); return ok && id.Name == name }

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// documentedRow is a table row naming a metric: weft_* (the
// controller's) and envoy_* (a sidecar's statistics, which the demo
// workload also declares for the calls it makes).
var documentedRow = regexp.MustCompile("(?m)^\\| `((?:weft|envoy)_[a-z0-9_]+)`")

// TestEveryMetricIsDocumented: docs/metrics.md has one table row per
// metric weft-controller exports, and no row for a metric that is gone.
func TestEveryMetricIsDocumented(t *testing.T) {
	root := repoRoot(t)
	code := exportedMetrics(t, root)
	if len(code) < 10 {
		t.Fatalf("found only %d metrics in the source (%v): the scan is broken", len(code), code)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range documentedRow.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	var missing, stale []string
	for name, file := range code {
		if !documented[name] {
			missing = append(missing, name+" (declared in "+file+")")
		}
	}
	for name := range documented {
		// Envoy's own series (a sidecar's) are documented without code
		// declaring them; only weft's rows can go stale.
		if _, ok := code[name]; !ok && strings.HasPrefix(name, "weft_") {
			stale = append(stale, name)
		}
	}
	sort.Strings(missing)
	slices.Sort(stale)
	if len(missing) > 0 {
		t.Errorf("docs/metrics.md has no row for:\n  %s\nadd a row: | `name` | type | labels | what it counts, and when to alert |", strings.Join(missing, "\n  "))
	}
	if len(stale) > 0 {
		t.Errorf("docs/metrics.md documents metrics no code declares (renamed or removed?): %v", stale)
	}
}
