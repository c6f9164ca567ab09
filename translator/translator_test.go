package translator_test

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

// golden is what a case's NAME.out.yaml holds: the status of every policy
// and the mesh model.
type golden struct {
	Warnings []string       `json:"warnings,omitempty"`
	Status   []policyStatus `json:"status,omitempty"`
	Mesh     *ir.Mesh       `json:"mesh"`
}

type policyStatus struct {
	Kind       string      `json:"kind"`
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Conditions []condition `json:"conditions"`
}

type condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	ObservedGeneration int64  `json:"observedGeneration"`
}

// TestGolden translates testdata/NAME.in.yaml and compares the result with
// testdata/NAME.out.yaml. Run with -update to rewrite the goldens; goldens
// without an input are removed.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no test cases in testdata/")
	}
	want := map[string]bool{}
	for _, inPath := range inputs {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		outPath := filepath.Join("testdata", name+".out.yaml")
		want[outPath] = true
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(inPath)
			if err != nil {
				t.Fatal(err)
			}
			in, err := translator.DecodeInputs(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := yaml.Marshal(render(translator.Translate(in)))
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(outPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			exp, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("%v (run go test ./translator -update to create it, then read it)", err)
			}
			if d := cmp.Diff(string(exp), string(got)); d != "" {
				t.Errorf("%s differs (-want +got):\n%s", outPath, d)
			}
		})
	}
	if *update {
		outs, _ := filepath.Glob("testdata/*.out.yaml")
		for _, o := range outs {
			if !want[o] {
				t.Logf("removing stale golden %s", o)
				_ = os.Remove(o)
			}
		}
	}
}

func render(out *translator.Output) golden {
	g := golden{Mesh: out.Mesh, Warnings: out.Warnings}
	for k, conds := range out.Status {
		ps := policyStatus{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name}
		for _, c := range conds {
			ps.Conditions = append(ps.Conditions, condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message, ObservedGeneration: c.ObservedGeneration})
		}
		g.Status = append(g.Status, ps)
	}
	sort.Slice(g.Status, func(i, j int) bool {
		a, b := g.Status[i], g.Status[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	return g
}

// TestTranslateIsDeterministic: equal inputs in another order give an equal
// model, so that equal meshes give equal xDS bytes and no needless pushes.
func TestTranslateIsDeterministic(t *testing.T) {
	data, err := os.ReadFile("testdata/canary.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := yaml.Marshal(render(translator.Translate(in)))
	reverse(in.Services)
	reverse(in.EndpointSlices)
	reverse(in.TrafficSplits)
	reverse(in.Pods)
	second, _ := yaml.Marshal(render(translator.Translate(in)))
	if d := cmp.Diff(string(first), string(second)); d != "" {
		t.Fatalf("input order changed the output:\n%s", d)
	}
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}
