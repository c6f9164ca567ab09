package main

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/internal/cli/stat"
)

// TestClientMetricsAreWhatWeftStatReads: the demo's series carry the
// names, labels and buckets `weft stat` reads from a sidecar, and a call
// that is not OK counts as a failure (class 5) — read back by weft stat's
// own parser.
func TestClientMetricsAreWhatWeftStatReads(t *testing.T) {
	m := newClientMetrics()
	const ok, v2 = "outbound|80||checkout-v1.shop.svc.cluster.local", "outbound|80||checkout-v2.shop.svc.cluster.local"
	m.record(ok, codes.OK, 3*time.Millisecond)
	m.record(ok, codes.OK, 40*time.Millisecond)
	m.record(v2, codes.Unavailable, 700*time.Millisecond)
	m.record(v2, codes.PermissionDenied, time.Millisecond/4)

	// Read as weft stat does: the admin endpoint's /metrics.
	rec := httptest.NewRecorder()
	adminMux(m.reg, func() error { return nil }).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text := rec.Body.String()
	got, err := stat.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[ok], got[v2]
	if a == nil || b == nil {
		t.Fatalf("weft stat read clusters %v from:\n%s", got, text)
	}
	if a.Requests != 2 || a.Responses["2"] != 2 || b.Requests != 2 || b.Responses["5"] != 2 || len(b.Responses) != 1 {
		t.Errorf("v1 %+v, v2 %+v: want 2 requests each; v1's two OK in class 2; v2's UNAVAILABLE and PERMISSION_DENIED both failures, class 5", a, b)
	}
	var bounds []float64
	for _, bk := range a.Buckets {
		bounds = append(bounds, bk.UpperBound)
	}
	if !slices.Equal(bounds[:len(bounds)-1], stat.LatencyBuckets) {
		t.Errorf("buckets %v, want Envoy's %v and +Inf", bounds, stat.LatencyBuckets)
	}
	// 3 ms falls in (1, 5], 40 ms in (25, 50]: cumulative 1 at 5, 2 at 50.
	for _, bk := range a.Buckets {
		if (bk.UpperBound == 5 && bk.Count != 1) || (bk.UpperBound == 50 && bk.Count != 2) || (bk.UpperBound == 1 && bk.Count != 0) {
			t.Errorf("bucket le=%v holds %v", bk.UpperBound, bk.Count)
		}
	}
}
