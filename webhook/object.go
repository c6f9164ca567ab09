package webhook

import (
	"bytes"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
)

// InjectObject injects a Pod, or the pod template of a Deployment,
// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob, the way the webhook
// will inject the pods they create. It serves `weft inject` and the golden
// tests. Other kinds are returned unchanged with ok false.
func InjectObject(obj runtime.Object, ns *corev1.Namespace, mc *v1alpha1.MeshConfig, o Options) (out runtime.Object, r Report, ok bool, err error) {
	obj = obj.DeepCopyObject()
	var tmpl *corev1.PodTemplateSpec
	var namespace, kind string
	switch t := obj.(type) {
	case *corev1.Pod:
		p, r, err := Inject(t, ns, mc, o)
		if err != nil {
			return nil, Report{}, true, fmt.Errorf("Pod %s: %w", t.Name, err)
		}
		return p, r, true, nil
	case *appsv1.Deployment:
		tmpl, namespace, kind = &t.Spec.Template, t.Namespace, "Deployment"
	case *appsv1.StatefulSet:
		tmpl, namespace, kind = &t.Spec.Template, t.Namespace, "StatefulSet"
	case *appsv1.DaemonSet:
		tmpl, namespace, kind = &t.Spec.Template, t.Namespace, "DaemonSet"
	case *appsv1.ReplicaSet:
		tmpl, namespace, kind = &t.Spec.Template, t.Namespace, "ReplicaSet"
	case *batchv1.Job:
		tmpl, namespace, kind = &t.Spec.Template, t.Namespace, "Job"
	case *batchv1.CronJob:
		tmpl, namespace, kind = &t.Spec.JobTemplate.Spec.Template, t.Namespace, "CronJob"
	default:
		return obj, Report{}, false, nil
	}
	pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	pod.Namespace = namespace
	injected, r, err := Inject(pod, ns, mc, o)
	if err != nil {
		return nil, Report{}, true, fmt.Errorf("%s %s: %w", kind, name(obj), err)
	}
	tmpl.ObjectMeta.Annotations = injected.Annotations
	tmpl.Spec = injected.Spec
	return obj, r, true, nil
}

func name(obj runtime.Object) string {
	if m, ok := obj.(interface{ GetName() string }); ok {
		return m.GetName()
	}
	return ""
}

// InjectManifests injects every workload in a YAML stream, as `weft inject`
// does: offline, each workload's namespace counts as injection-enabled (the
// pod annotations and skip reasons still apply). A MeshConfig in the stream
// is used and kept; mc, if not nil, is used otherwise. It returns the
// stream with the workloads injected, and one line per workload saying what
// happened.
func InjectManifests(data []byte, mc *v1alpha1.MeshConfig, o Options) ([]byte, []string, error) {
	objs, err := DecodeYAML(data)
	if err != nil {
		return nil, nil, err
	}
	for _, obj := range objs {
		if m, ok := obj.(*v1alpha1.MeshConfig); ok {
			mc = m
		}
	}
	var notes []string
	for i, obj := range objs {
		m, isMeta := obj.(interface{ GetNamespace() string })
		if !isMeta {
			continue
		}
		nsName := m.GetNamespace()
		if nsName == "" {
			nsName = "default"
		}
		ns := &corev1.Namespace{}
		ns.Name = nsName
		ns.Labels = map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}
		out, r, ok, err := InjectObject(obj, ns, mc, o)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		objs[i] = out
		kind := fmt.Sprintf("%T", obj)
		if gvk := obj.GetObjectKind().GroupVersionKind(); gvk.Kind != "" {
			kind = gvk.Kind
		}
		notes = append(notes, fmt.Sprintf("%s %s/%s: %s", kind, nsName, name(obj), r.Status()))
	}
	var b bytes.Buffer
	if err := EncodeYAML(&b, objs); err != nil {
		return nil, nil, err
	}
	return b.Bytes(), notes, nil
}
