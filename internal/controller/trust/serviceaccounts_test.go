package trust

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestServiceAccountsFromTheCache: the lookup the certificate
// authenticator and the Manager's Admit use reads weft-controller's
// metadata-only ServiceAccount informer (as the controller's RBAC
// allows): a ServiceAccount that exists admits its identity; once deleted,
// the lookup says so and Admit refuses with certs.ErrIdentityGone naming
// it (issue 13, item 3).
func TestServiceAccountsFromTheCache(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ns := range []string{"weft-system", "shop"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "greeter"}}
	if err := env.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(env.AsController(t), cache.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Start(cctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the cache did not start")
	}
	lookup := ServiceAccounts{Reader: c}
	id := certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "greeter"}

	if ok, err := lookup.ServiceAccountExists(ctx, "shop", "greeter"); !ok || err != nil {
		t.Fatalf("an existing ServiceAccount: %v, %v", ok, err)
	}
	if err := lookup.Admit(ctx, id); err != nil {
		t.Fatalf("Admit of an existing ServiceAccount's identity: %v", err)
	}
	if ok, err := lookup.ServiceAccountExists(ctx, "shop", "nobody"); ok || err != nil {
		t.Fatalf("a ServiceAccount that never existed: %v, %v", ok, err)
	}
	if err := env.Client.Delete(ctx, sa); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the cache sees the deletion", func() error {
		if ok, err := lookup.ServiceAccountExists(ctx, "shop", "greeter"); ok || err != nil {
			return fmt.Errorf("exists %v, %v", ok, err)
		}
		return nil
	})
	err = lookup.Admit(ctx, id)
	if !errors.Is(err, certs.ErrIdentityGone) || err.Error() != "service account shop/greeter does not exist: the identity no longer exists" {
		t.Fatalf("Admit after the deletion: %v", err)
	}
}
