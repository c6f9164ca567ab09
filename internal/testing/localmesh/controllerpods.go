package localmesh

import (
	"context"
	"fmt"
	"net"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ControllerLabels are config/controller's Pod labels, which `weft check`
// and `weft proxy-status` select weft-controller's pods by.
var ControllerLabels = map[string]string{"app.kubernetes.io/name": "weft-controller"}

// ControllerDeployment is config/controller's Deployment name.
const ControllerDeployment = "weft-controller"

// syncControllerPods plays the Deployment controller and the kubelet for
// weft-controller, as for the workloads: Deployment weft-system/
// weft-controller with the status the Deployment controller would write,
// and one Pod per replica (weft-controller-<i>, the POD_NAME it runs
// with) that is Running on HostIP and Ready while the process answers,
// deleted once it has stopped. Its container's monitoring port is the
// replica's pod-network address (a forwarder on HostIP to its /metrics:
// the API server's pod proxy refuses loopback addresses), so `weft check`
// reads each replica's /metrics through the pod proxy as in a cluster.
func (m *Mesh) syncControllerPods(ctx context.Context) error {
	m.mu.Lock()
	type rep struct {
		name string
		c    *Controller
		live bool
	}
	var reps []rep
	for i, c := range m.controllers {
		live := c != nil && c.Process != nil && c.Err() == nil
		reps = append(reps, rep{fmt.Sprintf("weft-controller-%d", i), c, live})
	}
	m.mu.Unlock()
	want := max(m.opts.Replicas, len(reps))
	ready := 0
	pods := m.clientset.CoreV1().Pods(SystemNamespace)
	for _, r := range reps {
		if !r.live {
			if err := pods.Delete(ctx, r.name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			continue
		}
		ready++
		if err := m.writeControllerPod(ctx, r.name, r.c); err != nil {
			return fmt.Errorf("pod %s/%s: %w", SystemNamespace, r.name, err)
		}
	}
	return m.writeControllerDeployment(ctx, int32(want), int32(ready))
}

func (m *Mesh) writeControllerPod(ctx context.Context, name string, c *Controller) error {
	port := func(addr string) int32 {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return int32(n)
	}
	pods := m.clientset.CoreV1().Pods(SystemNamespace)
	p, err := pods.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		p, err = pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace, Labels: ControllerLabels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "weft-controller", Image: "weft-controller",
				Ports: []corev1.ContainerPort{
					{Name: "xds-tls", ContainerPort: port(c.XDSTLS)},
					{Name: "webhook", ContainerPort: port(c.Webhook)},
					{Name: "monitoring", ContainerPort: port(c.podMonitoring.lis.Addr().String())},
				}}}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	start := p.Status.StartTime
	if start == nil {
		start = ptr.To(metav1.Now())
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: m.HostIP, PodIPs: []corev1.PodIP{{IP: m.HostIP}}, HostIP: m.HostIP, StartTime: start,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
	}
	_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// writeControllerDeployment writes the Deployment and the status its
// controller computes: Available when at least replicas − maxUnavailable
// (25 %, rounded down, the default strategy) are ready.
func (m *Mesh) writeControllerDeployment(ctx context.Context, replicas, ready int32) error {
	deps := m.clientset.AppsV1().Deployments(SystemNamespace)
	d, err := deps.Get(ctx, ControllerDeployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		d, err = deps.Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: ControllerDeployment, Namespace: SystemNamespace, Labels: ControllerLabels},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas),
				Selector: &metav1.LabelSelector{MatchLabels: ControllerLabels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: ControllerLabels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "weft-controller", Image: "weft-controller"}}}}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		d.Spec.Replicas = ptr.To(replicas)
		if d, err = deps.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	avail := corev1.ConditionFalse
	reason, msg := "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
	if ready >= replicas-replicas/4 {
		avail, reason, msg = corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability."
	}
	now := metav1.Now()
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: ready, UpdatedReplicas: ready, ReadyReplicas: ready, AvailableReplicas: ready,
		UnavailableReplicas: replicas - ready,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: avail, Reason: reason, Message: msg,
			LastUpdateTime: now, LastTransitionTime: now}},
	}
	_, err = deps.UpdateStatus(ctx, d, metav1.UpdateOptions{})
	return err
}
