package xds

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Authenticator decides whether a stream may speak for the node it names.
// It returns a gRPC status error (Unauthenticated, PermissionDenied) that
// tells the operator what to fix.
type Authenticator interface {
	Authenticate(ctx context.Context, node NodeInfo) error
}

// SetAuthenticator makes the ADS refuse streams that auth rejects (except
// on the Anonymous endpoint). Without one (development only) any stream may
// claim any node, so the ADS then serves no secrets at all. Call it before
// serving.
func (a *ADS) SetAuthenticator(auth Authenticator) { a.auth = auth }

// TokenAudience is the audience of the projected ServiceAccount token that
// injected sidecars present.
const TokenAudience = "weft"

// TokenReviewer checks a token with the API server (TokenReview), as
// authentication/v1 clients do. (An interface, so that the authenticator
// does not need a whole clientset.)
type TokenReviewer interface {
	Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}

// TokenAuthenticator accepts a stream whose "authorization: Bearer <token>"
// metadata holds a ServiceAccount token for audience "weft" that the API
// server vouches for, issued to the service account (and, for pod-bound
// tokens, the pod) that the node claims. Reviews are cached for a minute so
// that a reconnect storm costs one review per pod.
type TokenAuthenticator struct {
	Reviews TokenReviewer

	mu    sync.Mutex
	cache map[string]cachedReview
}

type cachedReview struct {
	status authnv1.TokenReviewStatus
	until  time.Time
}

// Authenticate implements Authenticator.
func (t *TokenAuthenticator) Authenticate(ctx context.Context, node NodeInfo) error {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if after, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(after)
		}
	}
	if token == "" {
		return status.Errorf(codes.Unauthenticated, "node %s sent no token: send a ServiceAccount token with audience %q as \"authorization: Bearer <token>\" (injected sidecars do)", node.ID, TokenAudience)
	}
	st, err := t.review(ctx, token)
	if err != nil {
		return status.Errorf(codes.Unavailable, "node %s: cannot review its token with the API server: %v", node.ID, err)
	}
	if !st.Authenticated {
		return status.Errorf(codes.Unauthenticated, "node %s: the API server rejected its token: %s", node.ID, st.Error)
	}
	want := "system:serviceaccount:" + node.Proxy.Namespace + ":" + node.Proxy.ServiceAccount
	if st.User.Username != want {
		return status.Errorf(codes.PermissionDenied, "node %s claims %s but its token is %s's", node.ID, want, st.User.Username)
	}
	pod, _, _ := strings.Cut(node.ID, ".")
	if names := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(names) > 0 && names[0] != pod {
		return status.Errorf(codes.PermissionDenied, "node %s claims pod %s but its token is bound to pod %s", node.ID, pod, names[0])
	}
	return nil
}

func (t *TokenAuthenticator) review(ctx context.Context, token string) (authnv1.TokenReviewStatus, error) {
	now := time.Now()
	t.mu.Lock()
	if c, ok := t.cache[token]; ok && now.Before(c.until) {
		t.mu.Unlock()
		return c.status, nil
	}
	t.mu.Unlock()
	res, err := t.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.TokenReviewStatus{}, err
	}
	if res.Status.Authenticated && !contains(res.Status.Audiences, TokenAudience) {
		res.Status.Authenticated = false
		res.Status.Error = fmt.Sprintf("the token is not for audience %q", TokenAudience)
	}
	t.mu.Lock()
	if t.cache == nil || len(t.cache) > 10000 {
		t.cache = map[string]cachedReview{} // bounded: forget all rather than grow
	}
	t.cache[token] = cachedReview{status: res.Status, until: now.Add(time.Minute)}
	t.mu.Unlock()
	return res.Status, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
