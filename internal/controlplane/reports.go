package controlplane

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/internal/replicas"
	"github.com/weftmesh/weft/internal/status"
)

// replicaReports wires internal/replicas: every replica keeps one report
// Lease, named after its pod, with two parts — the distribution of each
// policy among its proxies (the leader's status writer counts it with its
// own, docs/design/042) and the section "trust", the root rotation's facts
// (the trust follower sets it, the leader's rotation driver reads every
// live replica's, docs/design/020). The leader reads them all with one
// Collector.
type replicaReports struct {
	pub   *replicas.Publisher
	col   *replicas.Collector
	trust *replicas.Section
}

// trustSection names the root rotation's part of a replica's report.
const trustSection = "trust"

// newReplicaReports makes this replica's publisher of source's
// distribution (nil: none, as in tests of the rotation alone) and the
// leader's collector, for o.Namespace and o.Name.
func newReplicaReports(cs kubernetes.Interface, o replicas.Options, source func() replicas.Snapshot, log logr.Logger) (*replicaReports, error) {
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
	return &replicaReports{pub: pub, col: col, trust: trust}, nil
}

// add registers the publisher (every replica) and the collector (leader)
// with mgr; the collector tells w about changes.
func (r *replicaReports) add(mgr manager.Manager, w *status.Writer) error {
	r.col.SetNotifier(w)
	if err := mgr.Add(r.pub); err != nil {
		return err
	}
	return mgr.Add(r.col)
}

// reportName names this replica's report Lease after its pod: POD_NAME
// (the downward API sets it in config/controller), else the host name with
// a random suffix, since several processes may share a host.
func reportName() (string, error) {
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

// replicaID is the host name with a random suffix, so that two processes
// on one host (tests, a restart overlapping its predecessor) never share a
// report.
func replicaID() string {
	h, _ := os.Hostname()
	h = strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(h), "-"), "-.")
	if len(h) > 200 {
		h = h[:200]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	if h == "" {
		h = "weft"
	}
	return h + "-" + hex.EncodeToString(b)
}

var nonDNS = regexp.MustCompile(`[^a-z0-9.-]+`)
