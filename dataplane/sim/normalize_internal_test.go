package sim

import "testing"

// TestNormalizePath: Envoy's order (escaped slashes, then Chromium's
// canonicalization, then merged slashes), against hand-written cases.
func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in                         string
		unescape, normalize, merge bool
		want                       string
	}{
		{"/admin%2Fx", false, true, true, "/admin%2Fx"},
		{"/admin%2Fx", true, false, false, "/admin/x"},
		{"/admin%2fx?q=%2F", true, true, true, "/admin/x?q=%2F"},
		{"/admin%5Cx", true, true, false, "/admin/x"},
		{`/admin\x`, false, true, false, "/admin/x"},
		{"/%61dmin", false, true, false, "/admin"},
		{"/a/%2E%2E/admin", false, true, false, "/admin"},
		{"/a%20b%3F", false, true, false, "/a%20b%3F"},
		{"/a%2F..%2Fadmin", true, true, false, "/admin"},
		{"//a//b", false, false, true, "/a/b"},
	} {
		if got := normalizePath(tc.in, tc.unescape, tc.normalize, tc.merge); got != tc.want {
			t.Errorf("normalizePath(%q, unescape=%t, normalize=%t, merge=%t) = %q, want %q", tc.in, tc.unescape, tc.normalize, tc.merge, got, tc.want)
		}
	}
}
