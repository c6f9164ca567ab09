package trust

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// BenchmarkRootRotation times whole root rotations (request to Stable)
// with 300 simulated SDS proxies of 100 identities on one replica, against
// the real API server, with the production poll intervals. What it
// measures is mostly the pipeline's hops (Secret watch → follower → push →
// ACK → count → report Lease (coalesced, at most 4 writes/s) → collector's
// watch → driver), three times per rotation.
//
//	go test ./internal/controller -run '^$' -bench RootRotation -benchtime 3x
func BenchmarkRootRotation(b *testing.B) {
	const proxies, identities = 300, 100
	env := testenv.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}).Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName}}); err != nil {
		b.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
	reports := startReports(b, ctx, cs, ns, "weft-controller-0")
	_, f, d, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = f.Run(ctx) }()
	lead(ctx, d, reports.Col)
	addr := serveADS(b, ads)
	w := &world{t: b, noCheck: true}
	var ps []*sdsProxy
	for i := range proxies {
		ps = append(ps, w.dial(ctx, addr, fmt.Sprintf("p-%d.bench", i), "bench", fmt.Sprintf("sa-%d", i%identities)))
	}
	testkit.Eventually(b, "every proxy holds a certificate", func() error {
		for _, p := range ps {
			if chain, bundle := p.held(); chain == nil || bundle == nil {
				return fmt.Errorf("%s holds nothing yet", p.id)
			}
		}
		return nil
	})
	b.ResetTimer()
	for range b.N {
		if _, err := rootrotation.Rotate(ctx, env.Client, ns, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/rotation")
}
