package v1alpha1

import (
	"strings"
	"testing"
)

func TestResolveMTLSMode(t *testing.T) {
	cases := []struct {
		name     string
		mesh     MTLSMode
		labels   map[string]string
		want     MTLSMode
		warnWith string
	}{
		{"mesh default unset is Permissive", "", nil, MTLSModePermissive, ""},
		{"mesh Strict", MTLSModeStrict, nil, MTLSModeStrict, ""},
		{"mesh Permissive", MTLSModePermissive, map[string]string{"other": "x"}, MTLSModePermissive, ""},
		{"label Strict overrides", MTLSModePermissive, map[string]string{LabelMTLSMode: "Strict"}, MTLSModeStrict, ""},
		{"label Permissive overrides", MTLSModeStrict, map[string]string{LabelMTLSMode: "Permissive"}, MTLSModePermissive, ""},
		{"label case-insensitive", MTLSModePermissive, map[string]string{LabelMTLSMode: "strict"}, MTLSModeStrict, ""},
		{"invalid label keeps Strict default", MTLSModeStrict, map[string]string{LabelMTLSMode: "off"}, MTLSModeStrict,
			`namespace shop: label weft.dev/mtls-mode="off" is not Permissive or Strict; using the mesh-wide mode Strict`},
		{"empty label keeps default", MTLSModePermissive, map[string]string{LabelMTLSMode: ""}, MTLSModePermissive, `weft.dev/mtls-mode=""`},
	}
	for _, c := range cases {
		got, warn := ResolveMTLSMode(c.mesh, "shop", c.labels)
		if got != c.want {
			t.Errorf("%s: mode %s, want %s", c.name, got, c.want)
		}
		if (c.warnWith == "") != (warn == "") || !strings.Contains(warn, c.warnWith) {
			t.Errorf("%s: warning %q, want one containing %q", c.name, warn, c.warnWith)
		}
	}
}
