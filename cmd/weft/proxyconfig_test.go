package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProxyConfig: the proxy is found on whichever replica holds it (the
// other answers 404 as xds.DebugHandler does), one type is selected, and a
// proxy no replica holds is an error that says where to look.
func TestProxyConfig(t *testing.T) {
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no connected proxy "+r.URL.Query().Get("proxy")+" (see /debug/proxies)", http.StatusNotFound)
	}))
	defer empty.Close()
	var asked string
	holder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.RequestURI()
		if r.URL.Query().Get("proxy") != "web-0.shop" {
			http.Error(w, "no connected proxy", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte(`{"Listener": [{"name": "outbound", "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 15001}}}],
 "Secret": [{"name": "default", "version": "3", "content": "REDACTED"}]}`))
	}))
	defer holder.Close()
	run := func(args ...string) (string, error) {
		cmd := proxyConfigCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SilenceErrors = true
		cmd.SetArgs(append(args, "--address", strings.TrimPrefix(empty.URL, "http://"), "--address", holder.URL))
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run("shop/web-0")
	if err != nil {
		t.Fatal(err)
	}
	want := "clusters: []\nendpoints: []\nlisteners:\n- address:\n    socketAddress:\n      address: 0.0.0.0\n      portValue: 15001\n  name: outbound\nroutes: []\nsecrets:\n- content: REDACTED\n  name: default\n  version: \"3\"\n"
	if out != want {
		t.Errorf("weft proxy-config shop/web-0:\n%s\nwant:\n%s", out, want)
	}
	if asked != "/debug/config_dump?proxy=web-0.shop" {
		t.Errorf("asked %s", asked)
	}
	if out, err = run("shop/web-0", "listeners", "-o", "json"); err != nil || !strings.HasPrefix(out, "{\n  \"listeners\": [\n") || strings.Contains(out, "secrets") {
		t.Errorf("listeners -o json: %v\n%s", err, out)
	}
	if _, err = run("shop/nobody"); err == nil || !strings.Contains(err.Error(), "proxy shop/nobody (node nobody.shop) is connected to no weft-controller replica") {
		t.Errorf("unknown proxy: %v", err)
	}
	if _, err = run("web-0"); err == nil || !strings.Contains(err.Error(), "NAMESPACE/POD") {
		t.Errorf("no namespace: %v", err)
	}
}
