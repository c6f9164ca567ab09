package v1alpha1

import (
	"fmt"
	"strings"
)

// ResolveMTLSMode is the mode of a namespace's workloads: the namespace
// label weft.dev/mtls-mode when it is Permissive or Strict (any letter
// case), else the mesh default (Permissive when unset). An unusable label
// value keeps the mesh default and returns a warning for the namespace's
// events or status; the empty string means no warning.
func ResolveMTLSMode(meshDefault MTLSMode, namespace string, nsLabels map[string]string) (MTLSMode, string) {
	mode := MTLSModePermissive
	if strings.EqualFold(string(meshDefault), string(MTLSModeStrict)) {
		mode = MTLSModeStrict
	}
	v, ok := nsLabels[LabelMTLSMode]
	if !ok {
		return mode, ""
	}
	switch {
	case strings.EqualFold(v, string(MTLSModeStrict)):
		return MTLSModeStrict, ""
	case strings.EqualFold(v, string(MTLSModePermissive)):
		return MTLSModePermissive, ""
	}
	return mode, fmt.Sprintf("namespace %s: label %s=%q is not Permissive or Strict; using the mesh-wide mode %s", namespace, LabelMTLSMode, v, mode)
}
