package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// Path is where the injection webhook is served.
const Path = "/inject"

// Handler is the mutating admission handler: it decodes the pod, looks up
// its Namespace and the MeshConfig, calls Inject, and answers with a JSON
// patch. Register it with NewWebhook.
type Handler struct {
	reader client.Reader
	// live reads a Namespace the cached reader has not seen yet (nil:
	// none).
	live    client.Reader
	options Options
	decoder admission.Decoder
}

// NewHandler returns a handler that reads Namespaces and the MeshConfig
// through r (a cached client in the controller).
func NewHandler(r client.Reader, scheme *runtime.Scheme, o Options) *Handler {
	return &Handler{reader: r, options: o, decoder: admission.NewDecoder(scheme)}
}

// WithLiveReader sets an uncached reader (the manager's API reader) for a
// Namespace the cached reader does not hold yet: a pod created right after
// its namespace reaches the webhook before the watch has delivered the
// namespace, and refusing it fails a plain `kubectl create namespace`
// then `kubectl apply` (the API server does not retry admission).
func (h *Handler) WithLiveReader(r client.Reader) *Handler {
	h.live = r
	return h
}

// NewWebhook wraps the handler for an http.ServeMux or controller-runtime's
// webhook server, at Path.
func NewWebhook(h *Handler) *admission.Webhook {
	return (&admission.Webhook{Handler: h}).WithRecoverPanic(true)
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("weft injects only new pods")
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	// A pod made from a template has no namespace in the object yet.
	nsName := req.Namespace
	if nsName == "" {
		nsName = pod.Namespace
	}
	ns := &corev1.Namespace{}
	err := h.reader.Get(ctx, types.NamespacedName{Name: nsName}, ns)
	if apierrors.IsNotFound(err) && h.live != nil {
		err = h.live.Get(ctx, types.NamespacedName{Name: nsName}, ns)
	}
	if err != nil {
		// Fail closed: without the namespace weft cannot tell whether the
		// pod belongs in the mesh; a workload controller retries the
		// creation.
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("weft injection: reading namespace %s: %w", nsName, err))
	}
	mc := &v1alpha1.MeshConfig{}
	if err := h.reader.Get(ctx, types.NamespacedName{Name: v1alpha1.MeshConfigName}, mc); err != nil {
		if !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("weft injection: reading MeshConfig %s: %w", v1alpha1.MeshConfigName, err))
		}
		mc = nil // no MeshConfig: the defaults
	}

	out, report, err := Inject(pod, ns, mc, h.options)
	if err != nil {
		record(resultRejected, "Invalid")
		return admission.Denied("weft could not inject its sidecar: " + err.Error())
	}
	if report.Injected {
		record(resultInjected, "")
	} else {
		record(resultSkipped, string(report.Reason))
		if report.Reason == AlreadyInjected {
			return admission.Allowed(string(report.Reason))
		}
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}
