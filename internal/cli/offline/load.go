// Package offline is what `weft translate` and `weft explain` share: a
// folder of manifests read into the translator's inputs, each meshed pod's
// proxy as its bootstrap describes it to weft-controller, that proxy's xDS
// resources built and checked as weft-controller builds and checks them
// before a push, and the traffic simulator's World of the whole mesh.
//
// It is pure apart from reading the files it is given: no API server, no
// clock, no network.
package offline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/translator"
)

// read is what the translator reads, by "group/kind" (core kinds have an
// empty group). Every other kind is skipped with a note. A kind here that
// translator.DecodeInputs does not read fails loudly (its error), so the
// list cannot claim more than the translator does.
var read = map[string]bool{
	"/Namespace":                          true,
	"/Service":                            true,
	"discovery.k8s.io/EndpointSlice":      true,
	"/Pod":                                true,
	"mesh.weft.dev/TrafficSplit":          true,
	"mesh.weft.dev/RetryPolicy":           true,
	"mesh.weft.dev/AuthPolicy":            true,
	"mesh.weft.dev/MeshConfig":            true,
	"gateway.networking.k8s.io/HTTPRoute": true,
}

// workloads are kinds whose pods the mesh would hold once they run; a
// note says how to feed their pods instead.
var workloads = map[string]bool{
	"apps/Deployment": true, "apps/StatefulSet": true, "apps/DaemonSet": true, "apps/ReplicaSet": true,
	"batch/Job": true, "batch/CronJob": true,
}

// header is the part of a document that names it.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

func (h header) groupKind() string {
	group, _, ok := strings.Cut(h.APIVersion, "/")
	if !ok {
		group = ""
	}
	return group + "/" + h.Kind
}

// object names a document's object for messages: "TrafficSplit shop/canary".
func (h header) object() string {
	name := h.Metadata.Name
	if h.Metadata.Namespace != "" {
		name = h.Metadata.Namespace + "/" + name
	}
	if name == "" {
		name = "(no name)"
	}
	return h.Kind + " " + name
}

// Load reads every YAML or JSON file named by paths (a folder is read
// recursively, in name order; "-" is stdin) into translator inputs. A
// List (`kubectl get -o yaml`) is read item by item. Kinds the translator
// does not read are skipped with a note; an object the translator cannot
// decode is an error naming the file, the document, the object and (from
// the strict decoder) the field.
func Load(paths []string, stdin io.Reader) (in *translator.Inputs, notes []string, err error) {
	in = &translator.Inputs{}
	if len(paths) == 0 {
		return nil, nil, errors.New("no manifests: pass -f FILE or -f FOLDER (or -f - for standard input)")
	}
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			return nil, nil, err
		}
		for _, f := range files {
			var data []byte
			if f == "-" {
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, nil, err
			}
			n, err := loadFile(in, f, data)
			if err != nil {
				return nil, nil, err
			}
			notes = append(notes, n...)
		}
	}
	return in, notes, nil
}

// expand lists the manifest files of a path: itself, or a folder's
// *.yaml, *.yml and *.json files (hidden folders skipped).
func expand(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != p && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("%s: no .yaml, .yml or .json files", p)
	}
	sort.Strings(files)
	return files, err
}

func loadFile(in *translator.Inputs, file string, data []byte) (notes []string, err error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return notes, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		where := fmt.Sprintf("%s: document %d", file, doc)
		n, err := loadDoc(in, where, raw)
		if err != nil {
			return nil, err
		}
		notes = append(notes, n...)
	}
}

func loadDoc(in *translator.Inputs, where string, raw []byte) (notes []string, err error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" || onlyComments(t) {
		return nil, nil
	}
	var h header
	if err := yaml.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("%s: not a Kubernetes object: %w", where, err)
	}
	if h.Kind == "" || h.APIVersion == "" {
		return nil, fmt.Errorf("%s: not a Kubernetes object: apiVersion and kind are required", where)
	}
	if strings.HasSuffix(h.Kind, "List") && h.groupKind() == "/"+h.Kind {
		for i, item := range h.Items {
			n, err := loadDoc(in, fmt.Sprintf("%s, item %d", where, i), item)
			if err != nil {
				return nil, err
			}
			notes = append(notes, n...)
		}
		return notes, nil
	}
	gk := h.groupKind()
	switch {
	case workloads[gk]:
		return []string{fmt.Sprintf("%s: skipped %s: weft translate reads Pods, not the workloads that make them (inject and run it, then pass `kubectl get pods -o yaml`, or write its Pod)", where, h.object())}, nil
	case !read[gk]:
		return []string{fmt.Sprintf("%s: skipped %s: the translator does not read it", where, h.object())}, nil
	}
	one, err := translator.DecodeInputs(raw)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", where, h.object(), unwrapDocument(err))
	}
	if one.MeshConfig != nil && in.MeshConfig != nil {
		return nil, fmt.Errorf("%s (%s): a second MeshConfig: the mesh has one, named weft", where, h.object())
	}
	merge(in, one)
	return nil, nil
}

// unwrapDocument drops DecodeInputs' own "document 0: " prefix: the caller
// names the document in its file.
func unwrapDocument(err error) error {
	if u := errors.Unwrap(err); u != nil && strings.HasPrefix(err.Error(), "document 0: ") {
		return u
	}
	return err
}

func onlyComments(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

func merge(in, one *translator.Inputs) {
	in.Namespaces = append(in.Namespaces, one.Namespaces...)
	in.Services = append(in.Services, one.Services...)
	in.EndpointSlices = append(in.EndpointSlices, one.EndpointSlices...)
	in.Pods = append(in.Pods, one.Pods...)
	in.TrafficSplits = append(in.TrafficSplits, one.TrafficSplits...)
	in.HTTPRoutes = append(in.HTTPRoutes, one.HTTPRoutes...)
	in.RetryPolicies = append(in.RetryPolicies, one.RetryPolicies...)
	in.AuthPolicies = append(in.AuthPolicies, one.AuthPolicies...)
	if one.MeshConfig != nil {
		in.MeshConfig = one.MeshConfig
	}
}
