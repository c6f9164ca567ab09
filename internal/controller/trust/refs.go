package trust

import (
	"context"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// certificateRefs is MeshConfig's ResolvedRefs condition: whether what
// spec.certificates names exists and can be used — in cert-manager mode
// the issuer (present and Ready) and the pinned trust bundle (readable,
// CA certificates). Before, a missing issuer or an unreadable bundle was
// only a log line, although docs/api.md promised IssuerNotFound: an
// operator running `kubectl get meshconfig weft` saw nothing wrong while
// certificates stopped renewing. The message names the field and the fix.
func certificateRefs(ctx context.Context, c client.Client, namespace string, mc *v1alpha1.MeshConfig) metav1.Condition {
	cond := metav1.Condition{Type: v1alpha1.ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonResolvedRefs}
	provider, _ := workloadIssuer(mc)
	if provider != providerCertManager {
		cond.Message = "the built-in CA issues workload certificates; spec.certificates names nothing to resolve"
		return cond
	}
	cm := mc.Spec.Certificates.CertManager
	issuer, err := issuerReady(ctx, c, namespace, cm.IssuerRef)
	if err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, err.Error()
		return cond
	}
	anchors := readTrustBundle(ctx, c, namespace, cm.TrustBundle)
	if anchors.err != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonInvalidTrustBundle
		cond.Message = anchors.err.Error() + "; weft keeps trusting the CA certificates it read last"
		return cond
	}
	cond.Message = fmt.Sprintf("%s; the trust bundle (%s) holds %d CA certificate(s)", issuer, anchors.source, len(anchors.certs))
	return cond
}

// issuerReady checks a cert-manager issuer (cert-manager.io Issuer in
// namespace, or ClusterIssuer) exists and is Ready, and says which it is.
// An external issuer's kind is not known here: it is reported as not
// checked rather than guessed at.
func issuerReady(ctx context.Context, c client.Client, namespace string, ref v1alpha1.IssuerReference) (string, error) {
	const field = "spec.certificates.certManager.issuerRef"
	group, kind := ref.Group, ref.Kind
	if group == "" {
		group = "cert-manager.io"
	}
	if kind == "" {
		kind = "Issuer"
	}
	if group != cmapi.SchemeGroupVersion.Group || (kind != cmapi.IssuerKind && kind != cmapi.ClusterIssuerKind) {
		return fmt.Sprintf("the external issuer %s.%s %s (not checked: weft reads only cert-manager.io's Issuer and ClusterIssuer)", kind, group, ref.Name), nil
	}
	var status cmapi.IssuerStatus
	desc := fmt.Sprintf("ClusterIssuer %s", ref.Name)
	var err error
	if kind == cmapi.IssuerKind {
		desc = fmt.Sprintf("Issuer %s/%s", namespace, ref.Name)
		var iss cmapi.Issuer
		err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &iss)
		status = iss.Status
	} else {
		var iss cmapi.ClusterIssuer
		err = c.Get(ctx, client.ObjectKey{Name: ref.Name}, &iss)
		status = iss.Status
	}
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("%s: %s does not exist: create it, or name an issuer that does; workload certificates are not renewed until then (the current ones are served until they expire)", field, desc)
	case err != nil:
		return "", fmt.Errorf("%s: reading %s: %v", field, desc, err)
	}
	for _, cnd := range status.Conditions {
		if cnd.Type == cmapi.IssuerConditionReady {
			if cnd.Status == cmmeta.ConditionTrue {
				return desc + " is Ready", nil
			}
			return "", fmt.Errorf("%s: %s is not Ready (%s: %s): fix the issuer (kubectl describe it); workload certificates are not renewed until it is Ready", field, desc, cnd.Reason, cnd.Message)
		}
	}
	return "", fmt.Errorf("%s: %s has no Ready condition yet (is cert-manager running?); workload certificates are not renewed until it is Ready", field, desc)
}
