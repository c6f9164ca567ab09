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

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/webhook"
)

// read is what the translator reads, by "group/kind" (core kinds have an
// empty group). Every other kind is skipped with a note. A kind here that
// translator.DecodeInputs does not read fails loudly (its error), so the
// list cannot claim more than the translator does.
var read = map[string]bool{
	"/Namespace":                               true,
	"/Service":                                 true,
	"discovery.k8s.io/EndpointSlice":           true,
	"/Pod":                                     true,
	"mesh.weft.dev/TrafficSplit":               true,
	"mesh.weft.dev/RetryPolicy":                true,
	"mesh.weft.dev/BackendTrafficPolicy":       true,
	"mesh.weft.dev/RateLimitPolicy":            true,
	"mesh.weft.dev/AuthPolicy":                 true,
	"mesh.weft.dev/MeshConfig":                 true,
	"gateway.networking.k8s.io/HTTPRoute":      true,
	"gateway.networking.k8s.io/GRPCRoute":      true,
	"gateway.networking.k8s.io/ReferenceGrant": true,
}

// workloads are kinds whose pods the mesh would hold once they run: each
// is read as one pod of its template, injected as the webhook would.
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
// does not read are skipped with a note; each workload (Deployment,
// StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) whose pods are not in
// the manifests is read as one pod of its template, injected as the
// webhook would (see expand); an object the translator cannot
// decode is an error naming the file, the document, the object and (from
// the strict decoder) the field.
func Load(paths []string, stdin io.Reader) (in *translator.Inputs, notes []string, err error) {
	in = &translator.Inputs{}
	ld := &loader{in: in}
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
			n, err := ld.loadFile(f, data)
			if err != nil {
				return nil, nil, err
			}
			notes = append(notes, n...)
		}
	}
	n, err := ld.expand()
	if err != nil {
		return nil, nil, err
	}
	return in, append(notes, n...), nil
}

// loader accumulates the inputs, and the workloads to expand once every
// Namespace and the MeshConfig are known.
type loader struct {
	in        *translator.Inputs
	workloads []workload
}

type workload struct {
	where, object string
	obj           runtime.Object
}

// expand adds one Pod per workload, named <workload>-0, from its pod
// template, injected as the webhook would inject it (its Namespace's
// weft.dev/inject label from the manifests; a namespace the manifests do
// not hold counts as injection-enabled, as `weft inject` assumes). The pod
// has no IP, so it is no Service's endpoint: a note says so.
func (ld *loader) expand() (notes []string, err error) {
	for _, w := range ld.workloads {
		meta, ok := w.obj.(metav1.Object)
		if !ok {
			continue
		}
		var ns *corev1.Namespace
		assumed := false
		for _, n := range ld.in.Namespaces {
			if n.Name == meta.GetNamespace() {
				ns = n
			}
		}
		if ns == nil {
			assumed = true
			ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meta.GetNamespace(), Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
		}
		if tmpl := podTemplate(w.obj); tmpl != nil && len(tmpl.Labels) > 0 {
			if p := podWithLabels(ld.in.Pods, meta.GetNamespace(), tmpl.Labels); p != nil {
				notes = append(notes, fmt.Sprintf("%s: %s: its pods are in the manifests (%s/%s): not expanded", w.where, w.object, p.Namespace, p.Name))
				continue
			}
		}
		out, r, _, err := webhook.InjectObject(w.obj, ns, ld.in.MeshConfig, webhook.Options{})
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", w.where, w.object, err)
		}
		tmpl := podTemplate(out)
		if tmpl == nil {
			continue
		}
		pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
		pod.Namespace, pod.Name = meta.GetNamespace(), meta.GetName()+"-0"
		for i := 1; podNamed(ld.in.Pods, pod.Namespace, pod.Name); i++ {
			pod.Name = fmt.Sprintf("%s-%d", meta.GetName(), i)
		}
		ld.in.Pods = append(ld.in.Pods, pod)
		what := "injected"
		if !r.Injected {
			what = "not injected: " + r.Status()
		}
		if assumed {
			what += fmt.Sprintf(" (namespace %s is not in the manifests: taken as labelled %s=%s)", meta.GetNamespace(), dataplane.LabelInject, dataplane.InjectEnabled)
		}
		notes = append(notes, fmt.Sprintf("%s: %s is read as pod %s/%s, %s; it has no IP, so it is no Service's endpoint (give real pods, `kubectl get pods -o yaml`, for that)", w.where, w.object, pod.Namespace, pod.Name, what))
	}
	return notes, nil
}

func podWithLabels(pods []*corev1.Pod, ns string, labels map[string]string) *corev1.Pod {
	for _, p := range pods {
		if p.Namespace != ns {
			continue
		}
		all := true
		for k, v := range labels {
			all = all && p.Labels[k] == v
		}
		if all {
			return p
		}
	}
	return nil
}

func podNamed(pods []*corev1.Pod, ns, name string) bool {
	for _, p := range pods {
		if p.Namespace == ns && p.Name == name {
			return true
		}
	}
	return false
}

func podTemplate(obj runtime.Object) *corev1.PodTemplateSpec {
	switch t := obj.(type) {
	case *appsv1.Deployment:
		return &t.Spec.Template
	case *appsv1.StatefulSet:
		return &t.Spec.Template
	case *appsv1.DaemonSet:
		return &t.Spec.Template
	case *appsv1.ReplicaSet:
		return &t.Spec.Template
	case *batchv1.Job:
		return &t.Spec.Template
	case *batchv1.CronJob:
		return &t.Spec.JobTemplate.Spec.Template
	}
	return nil
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

func (ld *loader) loadFile(file string, data []byte) (notes []string, err error) {
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
		n, err := ld.loadDoc(where, raw)
		if err != nil {
			return nil, err
		}
		notes = append(notes, n...)
	}
}

func (ld *loader) loadDoc(where string, raw []byte) (notes []string, err error) {
	in := ld.in
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
			n, err := ld.loadDoc(fmt.Sprintf("%s, item %d", where, i), item)
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
		objs, err := webhook.DecodeYAML(raw)
		if err != nil || len(objs) != 1 {
			return nil, fmt.Errorf("%s (%s): %v", where, h.object(), err)
		}
		ld.workloads = append(ld.workloads, workload{where: where, object: h.object(), obj: objs[0]})
		return nil, nil
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
	in.Add(one)
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
