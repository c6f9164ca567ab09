package testenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestAPIServerRestart: StopAPIServer and StartAPIServer bring back the
// same API server — same etcd data, same serving and client certificates
// (the kubeconfig and the clients made before still work), same
// service-account signing key (a token issued before passes review).
func TestAPIServerRestart(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("kept").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("kept").CreateToken(ctx, "app", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{"weft"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	_, err = cs.CoreV1().Namespaces().Get(short, "kept", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Fatal("the API server answered after StopAPIServer")
	}
	if err := env.StopAPIServer(); err == nil {
		t.Error("StopAPIServer twice: no error")
	}

	start := time.Now()
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restarted and ready in %v", time.Since(start).Round(time.Millisecond))
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the restart, with the client made before: %v", err)
	}
	if out, err := env.Kubectl(ctx, nil, "get", "serviceaccount", "-n", "kept", "app", "-o", "name"); err != nil {
		t.Fatalf("kubectl with the old kubeconfig: %v", err)
	} else if strings.TrimSpace(out) != "serviceaccount/app" {
		t.Errorf("kubectl: %q", out)
	}
	rev, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: []string{"weft"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rev.Status.Authenticated || rev.Status.User.Username != "system:serviceaccount:kept:app" {
		t.Errorf("a token issued before the restart: %+v; want it authenticated as kept/app (same signing key)", rev.Status)
	}

	// Twice, on the restarted process too.
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the second restart: %v", err)
	}
}
