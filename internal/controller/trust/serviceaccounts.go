package trust

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
)

// ServiceAccounts answers whether a ServiceAccount exists from a reader of
// ServiceAccount metadata: weft-controller's cache, whose metadata-only
// informer the store already runs (internal/controller/store, 073), so a
// lookup costs no API call. It is the xDS CertificateAuthenticator's
// ServiceAccountChecker, and Admit refuses certificates for identities
// whose ServiceAccount is gone.
type ServiceAccounts struct {
	Reader client.Reader
}

// ServiceAccountExists implements xds.ServiceAccountChecker.
func (s ServiceAccounts) ServiceAccountExists(ctx context.Context, namespace, name string) (bool, error) {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	switch {
	case err == nil:
		return obj.DeletionTimestamp == nil, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, err
	}
}

// Admit is certs.ManagerOptions.Admit: no certificate is issued or renewed
// for an identity whose ServiceAccount does not exist.
func (s ServiceAccounts) Admit(ctx context.Context, id certs.Identity) error {
	ok, err := s.ServiceAccountExists(ctx, id.Namespace, id.ServiceAccount)
	if err != nil {
		return fmt.Errorf("cannot tell whether service account %s/%s exists: %w", id.Namespace, id.ServiceAccount, err)
	}
	if !ok {
		return fmt.Errorf("service account %s/%s does not exist: %w", id.Namespace, id.ServiceAccount, certs.ErrIdentityGone)
	}
	return nil
}
