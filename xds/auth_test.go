package xds_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/xds"
)

// reviewer plays the API server's TokenReview for the decision logic; the
// e2e rollout test runs the real TokenReview against a real API server.
type reviewer struct {
	calls  int
	tokens map[string]authnv1.TokenReviewStatus
}

func (r *reviewer) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	r.calls++
	st, ok := r.tokens[tr.Spec.Token]
	if !ok {
		st = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
	}
	return &authnv1.TokenReview{Status: st}, nil
}

func TestTokenAuthenticator(t *testing.T) {
	sa := func(ns, name string, aud []string, extra map[string]authnv1.ExtraValue) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, Audiences: aud,
			User: authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + name, Extra: extra}}
	}
	r := &reviewer{tokens: map[string]authnv1.TokenReviewStatus{
		"frontend":     sa("shop", "frontend", []string{"weft"}, map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"frontend-0"}}),
		"other-aud":    sa("shop", "frontend", []string{"https://kubernetes.default.svc"}, nil),
		"ledger":       sa("other", "ledger", []string{"weft"}, nil),
		"frontend-pod": sa("shop", "frontend", []string{"weft"}, map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"frontend-9"}}),
	}}
	auth := &xds.TokenAuthenticator{Reviews: r}
	node := xds.NodeInfo{ID: "frontend-0.shop", Proxy: envoy.Proxy{Namespace: "shop", ServiceAccount: "frontend"}}
	cases := []struct {
		token string
		code  codes.Code
		msg   string
	}{
		{"frontend", codes.OK, ""},
		{"", codes.Unauthenticated, `audience "weft"`},
		{"garbage", codes.Unauthenticated, "invalid bearer token"},
		{"other-aud", codes.Unauthenticated, `not for audience "weft"`},
		{"ledger", codes.PermissionDenied, "system:serviceaccount:other:ledger"},
		{"frontend-pod", codes.PermissionDenied, "bound to pod frontend-9"},
	}
	for _, tc := range cases {
		ctx := context.Background()
		if tc.token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tc.token))
		}
		err := auth.Authenticate(ctx, node)
		if status.Code(err) != tc.code || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("token %q: %v, want %v mentioning %q", tc.token, err, tc.code, tc.msg)
		}
	}
	// A reconnect with the same token is not reviewed again.
	calls := r.calls
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer frontend"))
	if err := auth.Authenticate(ctx, node); err != nil || r.calls != calls {
		t.Fatalf("cached token: err %v, %d more reviews", err, r.calls-calls)
	}
}
