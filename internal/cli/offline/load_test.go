package offline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoad reads a List as `kubectl get -o yaml` prints it, skips a
// comment-only document and a kind the translator does not read with a
// note, and names file, document, object and field in an error.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	list := write("list.yaml", `# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {ports: [{port: 80}]}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cfg, namespace: shop}
`)
	in, notes, err := Load([]string{list}, nil)
	if err != nil || len(in.Services) != 1 || in.Services[0].Name != "web" {
		t.Fatalf("Load(List): %v, %+v", err, in)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "document 2, item 1: skipped ConfigMap shop/cfg") {
		t.Errorf("notes: %q", notes)
	}
	bad := write("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {portz: []}\n")
	_, _, err = Load([]string{bad}, nil)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml: document 1 (Service shop/web): ") || !strings.Contains(err.Error(), `unknown field "spec.portz"`) {
		t.Errorf("Load(bad): %v", err)
	}
	two := write("mc.yaml", "apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: weft}\n---\napiVersion: mesh.weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: weft}\n")
	if _, _, err = Load([]string{two}, nil); err == nil || !strings.Contains(err.Error(), "a second MeshConfig") {
		t.Errorf("Load(two MeshConfigs): %v", err)
	}
}

// TestCaptureOptionsAcceptEveryWeftInitFlag: weft-init's backend flags
// change how the rules reach the kernel, not which: a pod whose weft-init
// names one is read as if it did not.
func TestCaptureOptionsAcceptEveryWeftInitFlag(t *testing.T) {
	want, err := InitOptions([]string{"--exclude-outbound-ports=5432"})
	if err != nil {
		t.Fatal(err)
	}
	for _, extra := range []string{"--backend=iptables", "--backend=nftables", "--iptables-restore=iptables-legacy-restore"} {
		got, err := InitOptions([]string{"--exclude-outbound-ports=5432", extra})
		if err != nil {
			t.Errorf("%s: %v", extra, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %+v, want %+v", extra, got, want)
		}
	}
}
