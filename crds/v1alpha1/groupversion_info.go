// Package v1alpha1 holds weft's API: the mesh.weft.dev/v1alpha1 kinds that
// users apply. The CRD YAML under crds/ and zz_generated.deepcopy.go are
// generated from these types by `make generate`.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.weft.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "mesh.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds every kind of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
