package certs

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	good := []struct {
		in   string
		want Identity
	}{
		{"spiffe://cluster.local/ns/shop/sa/cart", Identity{"cluster.local", "shop", "cart"}},
		{"spiffe://prod.example.com/ns/a-1/sa/svc.account-2", Identity{"prod.example.com", "a-1", "svc.account-2"}},
		{"spiffe://td/ns/x/sa/default", Identity{"td", "x", "default"}},
	}
	for _, c := range good {
		got, err := ParseIdentity(c.in)
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseIdentity(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if got.String() != c.in {
			t.Errorf("round trip: %q → %q", c.in, got.String())
		}
		if u := got.URL().String(); u != c.in {
			t.Errorf("URL() = %q, want %q", u, c.in)
		}
	}

	bad := []struct{ in, wantErr string }{
		{"", "must start with spiffe://"},
		{"https://cluster.local/ns/a/sa/b", "must start with spiffe://"},
		{"spiffe://cluster.local", "no path"},
		{"spiffe://cluster.local/", "path must be /ns/<namespace>/sa/<serviceaccount>"},
		{"spiffe://cluster.local/ns/a/sa/b/extra", "path must be"},
		{"spiffe://cluster.local/sa/b/ns/a", "path must be"},
		{"spiffe://cluster.local/ns//sa/b", "invalid namespace"},
		{"spiffe://cluster.local/ns/a/sa/", "invalid service account"},
		{"spiffe://Cluster.Local/ns/a/sa/b", "invalid trust domain"},
		{"spiffe://cluster.local:8443/ns/a/sa/b", "invalid trust domain"},
		{"spiffe://user@cluster.local/ns/a/sa/b", "user info"},
		{"spiffe://cluster.local/ns/a/sa/b?x=1", "query"},
		{"spiffe://cluster.local/ns/a/sa/b#f", "fragment"},
		{"spiffe://cluster.local/ns/a%2Fb/sa/c", "percent-encoding"},
		{"spiffe://cluster.local/ns/Shop/sa/cart", "invalid namespace"},
		{"spiffe://cluster.local/ns/" + strings.Repeat("a", 64) + "/sa/b", "invalid namespace"},
		{"spiffe://cluster.local/ns/a/sa/" + strings.Repeat("b", 254), "invalid service account"},
		{"spiffe://cluster.local/ns/a/sa/under_score", "invalid service account"},
	}
	for _, c := range bad {
		_, err := ParseIdentity(c.in)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ParseIdentity(%q) error = %v, want one containing %q", c.in, err, c.wantErr)
		}
	}
}

func TestNewIdentityValidates(t *testing.T) {
	if _, err := NewIdentity("cluster.local", "shop", "cart"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		td, ns, sa, want string
	}{
		{"", "a", "b", "trust domain is empty"},
		{strings.Repeat("a", 254), "a", "b", "at most 253"},
		{"-bad.local", "a", "b", "invalid trust domain"},
		{"cluster.local", "a.b", "b", "invalid namespace"},
		{"cluster.local", "a", "B", "invalid service account"},
	}
	for _, c := range cases {
		_, err := NewIdentity(c.td, c.ns, c.sa)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewIdentity(%q, %q, %q) error = %v, want %q", c.td, c.ns, c.sa, err, c.want)
		}
	}
}

func TestIdentityFromCertificate(t *testing.T) {
	u, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/cart")
	other, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/other")
	got, err := IdentityFromCertificate(&x509.Certificate{URIs: []*url.URL{u}})
	if err != nil || got != (Identity{"cluster.local", "shop", "cart"}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := IdentityFromCertificate(&x509.Certificate{}); err == nil || !strings.Contains(err.Error(), "found 0") {
		t.Fatalf("no URI SAN: err = %v", err)
	}
	if _, err := IdentityFromCertificate(&x509.Certificate{URIs: []*url.URL{u, other}}); err == nil || !strings.Contains(err.Error(), "found 2") {
		t.Fatalf("two URI SANs: err = %v", err)
	}
}
