package controller

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/internal/controller/replicas"
	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

var translateSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "weft_translate_seconds",
	Help:    "Time to turn a batch of cluster changes into the mesh model, by path (full, endpoints).",
	Buckets: prometheus.ExponentialBucketsRange(0.0001, 10, 14),
}, []string{"path"})

func init() { ctrlmetrics.Registry.MustRegister(translateSeconds) }

// meshLoop is the pipeline of DESIGN.md: store batches → translator →
// xDS, and policy status to the writer. It runs on every replica (each
// serves its own proxies); the writer writes only on the leader, which
// counts the other replicas' proxies from their reports (internal/controller/replicas).
type meshLoop struct {
	ads    *xds.ADS
	writer *status.Writer
	log    logr.Logger
	// changed, if set, hears that this replica's distribution may have
	// changed (replicas.Publisher.Changed). It must not block.
	changed func()

	mesh *ir.Mesh // only the loop's goroutine touches it
	// translateFn replaces translator.Translate in tests.
	translateFn func(*translator.Inputs) *translator.Output

	mu   sync.RWMutex
	gens map[translator.PolicyKey]int64 // each policy's translated generation
}

func (l *meshLoop) run(ctx context.Context, st *store.Store) error {
	return st.Run(ctx, l.batch)
}

func (l *meshLoop) batch(b store.Batch) {
	// A translator bug must not crash every replica (and with them the
	// fail-closed webhook) in a loop: a panic is counted
	// (weft_panics_total{stage="translate"}), logged, made an Event, and
	// the proxies keep the last good configuration. The next batch
	// translates again.
	defer l.ads.RecoverPanic("translate", "")
	// Streams of deleted pods end at once (they would otherwise keep
	// receiving renewed keys until their connection's age).
	for _, p := range b.Changes.Pods {
		if b.Inputs != nil && b.Pod(p.Namespace, p.Name) == nil {
			if n := l.ads.PodGone(p.Namespace, p.Name); n > 0 {
				l.log.Info("closed the streams of a deleted pod", "pod", p.String(), "streams", n)
			}
		}
	}
	// So do the streams of deleted ServiceAccounts (issue 13).
	for _, sa := range b.Changes.ServiceAccountsGone {
		if n := l.ads.ServiceAccountGone(sa.Namespace, sa.Name); n > 0 {
			l.log.Info("closed the streams of a deleted service account", "serviceAccount", sa.String(), "streams", n)
		}
	}
	if !b.Changes.Full && b.Changes.Kinds == 0 && l.mesh != nil {
		return // only ServiceAccounts were deleted: nothing to translate
	}
	start := time.Now()
	if b.Changes.EndpointsOnly && l.mesh != nil {
		// The cheapest path: only these Services' endpoints changed, and
		// only the proxies that depend on them are rebuilt.
		m := l.mesh
		for _, k := range b.Changes.Services {
			m = l.translateEndpoints(m, k, b)
		}
		l.mesh = m
		translateSeconds.WithLabelValues("endpoints").Observe(time.Since(start).Seconds())
		l.ads.UpdateEndpoints(l.mesh, b.Changes.Services, b.FirstEvent)
		return
	}
	out := l.translate(b.Inputs)
	// Unchanged Services keep their pointers from the previous model, so
	// Update's Diff skips them and what is memoized per Service or port is
	// found again (ir.Reuse, docs/design/145).
	l.mesh = ir.Reuse(l.mesh, out.Mesh)
	translateSeconds.WithLabelValues("full").Observe(time.Since(start).Seconds())
	for _, w := range out.Warnings {
		l.log.Info("configuration warning", "warning", w)
	}
	// Push first, then say which generations are out: until Update has
	// rebuilt the proxies' configurations, none carries the new
	// generations, and PolicyState would find no affected proxy — which
	// reads as "nothing to program", Programmed=True too early.
	l.ads.Update(l.mesh, b.FirstEvent)
	gens := make(map[translator.PolicyKey]int64, len(out.Status))
	for k, conds := range out.Status {
		if len(conds) > 0 {
			gens[k] = conds[0].ObservedGeneration
		}
	}
	l.mu.Lock()
	l.gens = gens
	l.mu.Unlock()
	l.writer.SetDesired(out.Status)
	if l.changed != nil {
		l.changed()
	}
}

// translate and translateEndpoints are the translator's entry points
// (tests replace them to make them panic).
func (l *meshLoop) translate(in *translator.Inputs) *translator.Output {
	if l.translateFn != nil {
		return l.translateFn(in)
	}
	return translator.Translate(in)
}

func (l *meshLoop) translateEndpoints(m *ir.Mesh, k ir.ServiceKey, b store.Batch) *ir.Mesh {
	return translator.UpdateEndpoints(m, k, b.EndpointSlices(k), b.Pod)
}

// Programmed implements status.ProgrammedSource from the xDS server's
// per-proxy ACK state, for the generation that was last translated.
func (l *meshLoop) Programmed(key translator.PolicyKey) (status.Distribution, bool) {
	l.mu.RLock()
	gen, ok := l.gens[key]
	l.mu.RUnlock()
	if !ok {
		return status.Distribution{}, false
	}
	return l.distribution(key, gen), true
}

func (l *meshLoop) distribution(key translator.PolicyKey, gen int64) status.Distribution {
	return distributionOf(gen, l.ads.PolicyState(ir.PolicyRef{Kind: key.Kind, Namespace: key.Namespace, Name: key.Name, Generation: gen}))
}

func distributionOf(gen int64, st xds.PolicyState) status.Distribution {
	return status.Distribution{Generation: gen, Proxies: st.Affected, Acked: st.Acked, Rejected: st.Rejected, Error: st.Message}
}

// acked tells the writer (and this replica's report) which policies a
// proxy's ACK or NACK concerns.
func (l *meshLoop) acked(refs []ir.PolicyRef) {
	keys := make([]translator.PolicyKey, len(refs))
	for i, r := range refs {
		keys[i] = translator.PolicyKey{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
	}
	l.writer.ProgrammedChanged(keys...)
	if l.changed != nil {
		l.changed()
	}
}

// snapshot is this replica's report (replicas.Publisher's source): every
// translated policy's distribution among the proxies connected here.
func (l *meshLoop) snapshot() replicas.Snapshot {
	l.mu.RLock()
	gens := l.gens
	l.mu.RUnlock()
	s := replicas.Snapshot{Proxies: len(l.ads.Proxies()), Policies: make(map[translator.PolicyKey]status.Distribution, len(gens))}
	// Every policy in one pass over the proxies (xds.PolicyStates): the
	// report is rebuilt on every change and heartbeat.
	keys := make([]translator.PolicyKey, 0, len(gens))
	refs := make([]ir.PolicyRef, 0, len(gens))
	for k, gen := range gens {
		keys = append(keys, k)
		refs = append(refs, ir.PolicyRef{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Generation: gen})
	}
	for i, st := range l.ads.PolicyStates(refs) {
		s.Policies[keys[i]] = distributionOf(refs[i].Generation, st)
	}
	return s
}
