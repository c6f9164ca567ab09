// Package argocd tests weft's Argo CD health checks: the Lua scripts under
// mesh.weft.dev/<Kind>/health.lua, run with gopher-lua (the interpreter Argo
// CD embeds) the way Argo CD runs them, against the objects listed in each
// kind's health_test.yaml (Argo CD's own test layout).
package argocd

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite argocd-cm.yaml from the health.lua scripts")

// kinds are weft's kinds; each has a health check.
var kinds = []string{"TrafficSplit", "RetryPolicy", "BackendTrafficPolicy", "RateLimitPolicy", "AuthPolicy", "MeshConfig"}

const group = "mesh.weft.dev"

// healthTests is Argo CD's health_test.yaml.
type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

func TestHealthChecks(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(group, kind)
			script := readFile(t, filepath.Join(dir, "health.lua"))
			var tests healthTests
			if err := yaml.UnmarshalStrict([]byte(readFile(t, filepath.Join(dir, "health_test.yaml"))), &tests); err != nil {
				t.Fatalf("%s/health_test.yaml: %v", dir, err)
			}
			seen := map[string]bool{}
			for _, tc := range tests.Tests {
				seen[tc.HealthStatus.Status] = true
				t.Run(strings.TrimSuffix(filepath.Base(tc.InputPath), ".yaml"), func(t *testing.T) {
					obj := readObject(t, filepath.Join(dir, tc.InputPath))
					if obj.GetKind() != kind || obj.GroupVersionKind().Group != group {
						t.Fatalf("%s is a %s, want a %s.%s", tc.InputPath, obj.GroupVersionKind(), kind, group)
					}
					status, message, err := runHealthLua(obj, script)
					if err != nil {
						t.Fatal(err)
					}
					if status != tc.HealthStatus.Status || message != tc.HealthStatus.Message {
						t.Errorf("health = %s %q, want %s %q", status, message, tc.HealthStatus.Status, tc.HealthStatus.Message)
					}
				})
			}
			for _, want := range []string{"Healthy", "Progressing", "Degraded"} {
				if !seen[want] {
					t.Errorf("%s/health_test.yaml has no %s case", dir, want)
				}
			}
		})
	}
}

// TestScriptsAreOneScript keeps the per-kind copies identical: the kinds
// share one status contract, so they share one health check.
func TestScriptsAreOneScript(t *testing.T) {
	first := readFile(t, filepath.Join(group, kinds[0], "health.lua"))
	for _, kind := range kinds[1:] {
		if readFile(t, filepath.Join(group, kind, "health.lua")) != first {
			t.Errorf("%s/%s/health.lua differs from %s/%s/health.lua; copy the one script to every kind", group, kind, group, kinds[0])
		}
	}
}

// TestArgoCDConfigMap checks that argocd-cm.yaml, the snippet users merge
// into Argo CD's argocd-cm, carries the current scripts. Run with -update
// to regenerate it.
func TestArgoCDConfigMap(t *testing.T) {
	want := configMap(t)
	if *update {
		if err := os.WriteFile("argocd-cm.yaml", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, "argocd-cm.yaml"); got != want {
		t.Errorf("argocd-cm.yaml is stale: run `go test ./config/argocd -run TestArgoCDConfigMap -update`")
	}
	// And it is a ConfigMap whose keys Argo CD reads.
	var cm struct {
		Kind string
		Data map[string]string
	}
	if err := yaml.Unmarshal([]byte(want), &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range kinds {
		key := fmt.Sprintf("resource.customizations.health.%s_%s", group, kind)
		if cm.Kind != "ConfigMap" || cm.Data[key] != readFile(t, filepath.Join(group, kind, "health.lua")) {
			t.Errorf("argocd-cm.yaml: data[%q] is not %s/%s/health.lua", key, group, kind)
		}
	}
}

func configMap(t *testing.T) string {
	var b strings.Builder
	b.WriteString(`# Generated from mesh.weft.dev/*/health.lua by
# go test ./config/argocd -run TestArgoCDConfigMap -update. Do not edit.
#
# Argo CD health checks for weft's kinds, as an argocd-cm patch: merge it
# into the argocd-cm ConfigMap (see README.md).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
`)
	for _, kind := range kinds {
		fmt.Fprintf(&b, "  resource.customizations.health.%s_%s: |\n", group, kind)
		for line := range strings.Lines(readFile(t, filepath.Join(group, kind, "health.lua"))) {
			if strings.TrimSpace(line) == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("    " + line)
		}
	}
	return b.String()
}

// runHealthLua runs a health script as Argo CD runs a custom (argocd-cm)
// health check: without Lua's open libraries, only package, base and table
// loaded (Argo CD adds a reduced os library, which these scripts do not
// use), one second to finish, the object as the global obj, and the returned
// table read as {status, message}.
func runHealthLua(obj *unstructured.Unstructured, script string) (status, message string, err error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, want a table", l.Get(-1).Type())
	}
	s, ok1 := ret.RawGetString("status").(lua.LString)
	m, ok2 := ret.RawGetString("message").(lua.LString)
	if !ok1 || !ok2 {
		return "", "", fmt.Errorf("the script returned status %v and message %v, want two strings", ret.RawGetString("status"), ret.RawGetString("message"))
	}
	if !slices.Contains([]string{"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}, string(s)) {
		return "", "", fmt.Errorf("the script returned status %q, which Argo CD does not know", s)
	}
	return string(s), string(m), nil
}

// toLua converts an unstructured object as Argo CD's decodeValue does:
// objects and arrays become tables (arrays 1-based), numbers LNumber.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := yaml.YAMLToJSON([]byte(readFile(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil { // numbers become int64, as in Argo CD
		t.Fatalf("%s: %v", path, err)
	}
	return obj
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
