package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

// TestGolden runs `weft translate` and `weft explain` on the manifests in
// testdata/ and compares what they print (standard output, standard error
// and the error) with testdata/NAME.golden. Run with -update to rewrite
// them; goldens no case names are removed.
func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		cmd  func() *cobra.Command
		args string
	}{
		// weft translate
		{"translate-client-routes", translateCmd, "-f testdata/mesh --proxy shop/client-0 --type routes"},
		{"translate-api-v1-all", translateCmd, "-f testdata/mesh/10-shop.yaml -f testdata/mesh/20-api.yaml --proxy shop/api-v1-0"},
		{"translate-web-listeners-json", translateCmd, "-f testdata/mesh --proxy shop/web-0 --type listeners -o json"},
		{"translate-unknown-field", translateCmd, "-f testdata/bad"},
		{"translate-unknown-proxy", translateCmd, "-f testdata/mesh --proxy shop/nobody"},
		{"translate-bad-type", translateCmd, "-f testdata/mesh --type secrets"},
		{"translate-workloads-by-serviceaccount", translateCmd, "-f testdata/workloads --proxy shop/checkout --type listeners"},
		// weft explain
		{"explain-delivered", explainCmd, "-f testdata/mesh --from shop/client-0 --to web.shop:80 --path /orders"},
		{"explain-denied-by-rule", explainCmd, "-f testdata/mesh --from shop/client-0 --to web.shop:80 --method DELETE --path /orders/1"},
		{"explain-denied-no-allow", explainCmd, "-f testdata/mesh --from shop/stranger-0 --to web.shop:80"},
		{"explain-split", explainCmd, "-f testdata/mesh --from shop/client-0 --to api.shop:80 -H x-user=alice"},
		{"explain-ipv6", explainCmd, "-f testdata/mesh --from shop/client-0 --to web.shop:80 --ipv6"},
		{"explain-tcp-server-first", explainCmd, "-f testdata/mesh --from shop/web-0 --to mysql.shop:3306 --protocol server-first"},
		{"explain-strict-from-unmeshed", explainCmd, "-f testdata/mesh --from shop/legacy-0 --to secrets.vault:80"},
		{"explain-from-proxyless", explainCmd, "-f testdata/proxyless --from shop/grpc-client-0 --to web.shop:80"},
		{"explain-no-such-pod", explainCmd, "-f testdata/mesh --from shop/nobody --to web.shop:80"},
	}
	want := map[string]bool{}
	for _, c := range cases {
		path := filepath.Join("testdata", c.name+".golden")
		want[path] = true
		t.Run(c.name, func(t *testing.T) {
			cmd := c.cmd()
			cmd.SilenceErrors = true // as under weft's root command, which prints the error itself
			var stdout, stderr bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			cmd.SetArgs(strings.Fields(c.args))
			err := cmd.ExecuteContext(context.Background())
			var got strings.Builder
			got.WriteString("$ weft " + strings.Fields(cmd.Use)[0] + " " + c.args + "\n")
			if stderr.Len() > 0 {
				got.WriteString("--- stderr\n" + stderr.String())
			}
			if err != nil {
				got.WriteString("--- error\n" + err.Error() + "\n")
			}
			got.WriteString("--- stdout\n" + stdout.String())
			if *update {
				if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			exp, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/weft -run TestGolden -update to create it, then read it)", err)
			}
			if d := cmp.Diff(string(exp), got.String()); d != "" {
				t.Errorf("%s differs (-want +got):\n%s", path, d)
			}
		})
	}
	goldens, _ := filepath.Glob("testdata/*.golden")
	for _, g := range goldens {
		if want[g] {
			continue
		}
		if *update {
			_ = os.Remove(g)
		} else {
			t.Errorf("stale golden %s: run with -update to remove it", g)
		}
	}
}
