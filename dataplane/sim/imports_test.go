package sim_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the simulator independent of what it checks: its
// non-test files import the standard library, go-control-plane's protos,
// protobuf, and (later) the leaf package dataplane — never a weft builder.
func TestImports(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			ok := !strings.Contains(strings.Split(p, "/")[0], ".") || // standard library
				strings.HasPrefix(p, "github.com/envoyproxy/go-control-plane/envoy/") ||
				strings.HasPrefix(p, "google.golang.org/protobuf/") ||
				p == "github.com/weftmesh/weft/dataplane"
			if !ok {
				t.Errorf("%s imports %s: the simulator may import only the standard library, go-control-plane's envoy protos, protobuf and package dataplane", f, p)
			}
		}
	}
}
