package controlplane

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/internal/replicas"
	"github.com/weftmesh/weft/internal/status"
)

// distributionReports wires internal/replicas: every replica publishes its
// proxies' distribution of each policy; the leader's status writer counts
// the other replicas' with its own (docs/design/042). Without leader
// election (one replica, for development) there is nothing to share and
// both are nil. (replicas.go's weft-replica-<id> Leases carry the root
// rotation's facts.)
type distributionReports struct {
	pub *replicas.Publisher
	col *replicas.Collector
}

func newDistributionReports(cfg *rest.Config, o Options, loop *meshLoop, log logr.Logger) (*distributionReports, error) {
	if !o.LeaderElection {
		return &distributionReports{}, nil
	}
	name, err := distributionReportName()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ro := replicas.Options{Namespace: o.LeaderElectionNamespace, Name: name}
	pub, err := replicas.NewPublisher(cs, loop.snapshot, ro, log)
	if err != nil {
		return nil, err
	}
	col, err := replicas.NewCollector(cs, ro, log)
	if err != nil {
		return nil, err
	}
	loop.changed = pub.Changed
	log.Info("reporting this replica's policy distribution", "lease", ro.Namespace+"/"+name)
	return &distributionReports{pub: pub, col: col}, nil
}

// peers is the status writer's PeerSource (nil without leader election).
func (r *distributionReports) peers() status.PeerSource {
	if r.col == nil {
		return nil
	}
	return r.col
}

// add registers the publisher (every replica) and the collector (leader)
// with mgr; the collector tells w about changes.
func (r *distributionReports) add(mgr manager.Manager, w *status.Writer) error {
	if r.pub == nil {
		return nil
	}
	r.col.SetNotifier(w)
	if err := mgr.Add(r.pub); err != nil {
		return err
	}
	return mgr.Add(r.col)
}

// distributionReportName names this replica's report Lease after its pod:
// POD_NAME (the downward API sets it in config/controller), else the host
// name with a random suffix (replicaID), since several processes may share
// a host.
func distributionReportName() (string, error) {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name = replicaID()
	}
	if name == LeaseName {
		// The leader-election Lease has this name; the report would
		// overwrite it.
		return "", fmt.Errorf("POD_NAME %q is the leader-election Lease's name: the replica's report Lease would replace it; name the pod differently", name)
	}
	return name, nil
}
