package localmesh

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// OutsideSpec is a client outside the mesh: a pod in a namespace weft does
// not inject, whose weft-demo calls a Service over plaintext, with no
// xDS and no certificate, at Address — where the Service's cluster IP
// would take it (there is no kube-proxy for Services here).
type OutsideSpec struct {
	Namespace, Pod string
	// Target is the Service called, NAME.NAMESPACE:PORT (its calls are
	// counted under that Service).
	Target string
	// Address is the server pod's IP:PORT.
	Address string
	// Rate is calls per second (default 20).
	Rate float64
}

// StartOutsideClient creates the pod (in its namespace, created if
// missing, without weft's label) and starts its weft-demo, which is
// ready once a call ended, whatever its code. Stop it with Workload.Stop.
func (m *Mesh) StartOutsideClient(ctx context.Context, s OutsideSpec) (*Workload, error) {
	if s.Rate == 0 {
		s.Rate = 20
	}
	w := &Workload{Spec: Spec{Namespace: s.Namespace, Pod: s.Pod, ServiceAccount: "default", Targets: []string{s.Target}, Rate: s.Rate, Refused: true},
		m: m, Dir: filepath.Join(m.opts.Dir, "workloads", s.Namespace+"-"+s.Pod)}
	var err error
	if w.Admin, err = freeAddr("127.0.0.1"); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if _, dup := m.workloads[w.key()]; dup {
		m.mu.Unlock()
		return nil, fmt.Errorf("workload %s already runs", w.key())
	}
	m.workloads[w.key()] = w
	m.mu.Unlock()
	if err := w.startOutside(ctx, s.Address); err != nil {
		return w, fmt.Errorf("outside client %s: %w", w.key(), errors.Join(err, w.Stop(ctx)))
	}
	return w, nil
}

func (w *Workload) startOutside(ctx context.Context, address string) error {
	cs := w.m.clientset
	if err := w.m.createNamespace(ctx, w.Namespace, nil); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: w.Pod, Namespace: w.Namespace, Labels: map[string]string{"app": w.Pod}},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "weft-demo"}}},
	}
	created, err := cs.CoreV1().Pods(w.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err == nil {
		w.pod = created
		if err := w.setReady(ctx, false); err != nil {
			return err
		}
	}
	w.App, err = startProcess(w.m.logDir(), w.Namespace+"-"+w.Pod, filepath.Join(w.m.opts.BinDir, "weft-demo"), nil,
		"call", "--admin", w.Admin, "--rate", strconv.FormatFloat(w.Rate, 'f', -1, 64), "--ready-on", "any",
		"--target", w.Targets[0], "--plaintext-address", address)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+w.Admin+"/ready", 2*time.Minute, w.App.Exited()); err != nil {
		return fmt.Errorf("its calls never ended: %w\n%s", err, w.App.Logs(4000))
	}
	if w.pod != nil {
		return w.setReady(ctx, true)
	}
	return nil
}
