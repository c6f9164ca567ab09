package trust

import (
	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/internal/controller/replicas"
	"github.com/weftmesh/weft/internal/controller/status"
)

// Reports wires internal/controller/replicas: every replica keeps one report
// Lease, named after its pod, with two parts — the distribution of each
// policy among its proxies (the leader's status writer counts it with its
// own, docs/design/042) and the section "trust", the root rotation's facts
// (the trust follower sets it, the leader's rotation driver reads every
// live replica's, docs/design/020). Every replica reads them all with one
// Collector, so that a new leader knows them at once (docs/design/152).
type Reports struct {
	Pub   *replicas.Publisher
	Col   *replicas.Collector
	Trust *replicas.Section
}

// trustSection names the root rotation's part of a replica's report.
const trustSection = "trust"

// NewReports makes this replica's publisher of source's
// distribution (nil: none, as in tests of the rotation alone) and the
// leader's collector, for o.Namespace and o.Name.
func NewReports(cs kubernetes.Interface, o replicas.Options, source func() replicas.Snapshot, log logr.Logger) (*Reports, error) {
	pub, err := replicas.NewPublisher(cs, source, o, log)
	if err != nil {
		return nil, err
	}
	col, err := replicas.NewCollector(cs, o, log)
	if err != nil {
		return nil, err
	}
	trust, err := pub.Section(trustSection)
	if err != nil {
		return nil, err
	}
	return &Reports{Pub: pub, Col: col, Trust: trust}, nil
}

// Add registers the publisher and the collector (every replica) and the
// collector's leader duty with mgr; the collector tells w about changes.
func (r *Reports) Add(mgr manager.Manager, w *status.Writer) error {
	r.Col.SetNotifier(w)
	if err := mgr.Add(r.Pub); err != nil {
		return err
	}
	if err := mgr.Add(r.Col); err != nil {
		return err
	}
	return mgr.Add(r.Col.Leading())
}
