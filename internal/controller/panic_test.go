package controller

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// TestTranslatePanicKeepsLastGoodMesh: a panic in translation (a weft
// bug) must not crash the replica — every replica would crash on the same
// cluster state — but be counted, reported (an Event, through the ADS's
// OnPanic), and leave the proxies' configuration as it was.
func TestTranslatePanicKeepsLastGoodMesh(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	var heard []string
	ads.OnPanic(func(stage, _ string, _ any) { heard = append(heard, stage) })
	good := &ir.Mesh{TrustDomain: "good.example"}
	ads.Update(good, time.Now())
	l := &meshLoop{ads: ads, log: logr.Discard(), mesh: good}
	l.translateFn = func(*translator.Inputs) *translator.Output { panic("a translator bug") }

	before := panicsOf(t, "translate")
	l.batch(store.Batch{Inputs: &translator.Inputs{}, FirstEvent: time.Now(), Changes: store.Changes{Kinds: store.KindService}})

	if got := panicsOf(t, "translate") - before; got != 1 {
		t.Errorf("weft_panics_total{stage=translate} grew by %v, want 1", got)
	}
	if len(heard) != 1 || heard[0] != "translate" {
		t.Errorf("OnPanic (the Event) heard %v, want [translate]", heard)
	}
	if l.mesh != good {
		t.Error("the loop's model changed after a failed translation")
	}
}

func panicsOf(t *testing.T, stage string) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_panics_total" {
			continue
		}
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "stage" && lp.GetValue() == stage {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestServiceAccountOnlyBatchTranslatesNothing: a batch that only reports
// deleted ServiceAccounts ends their streams (ADS.ServiceAccountGone) and
// does not translate: ServiceAccounts are no translator input.
func TestServiceAccountOnlyBatchTranslatesNothing(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	good := &ir.Mesh{TrustDomain: "good.example"}
	ads.Update(good, time.Now())
	translations := 0
	l := &meshLoop{ads: ads, log: logr.Discard(), mesh: good}
	l.translateFn = func(*translator.Inputs) *translator.Output { translations++; return &translator.Output{Mesh: good} }
	l.batch(store.Batch{Inputs: &translator.Inputs{}, FirstEvent: time.Now(),
		Changes: store.Changes{ServiceAccountsGone: []types.NamespacedName{{Namespace: "shop", Name: "frontend"}}}})
	if translations != 0 {
		t.Errorf("%d translations for a batch of deleted ServiceAccounts only, want 0", translations)
	}
}
