package status

import "github.com/weftmesh/weft/translator"

// Report is what one weft-controller replica knows about one policy: the
// distribution among the proxies connected to it. Each replica serves its
// own proxies, so the leader's writer combines its own report with every
// live peer's (docs/design/042-programmed-across-replicas.md).
type Report struct {
	// Replica names the replica, for logs and tests.
	Replica string
	// Known is false when the replica has not translated the policy yet:
	// its proxies may need it, and nothing says whether they have it.
	Known bool
	Distribution
}

// PeerSource says what the other live replicas report about a policy. The
// writer calls it from its own goroutine whenever it computes a policy's
// status, so it must be safe for concurrent use and cheap. It tells the
// writer about changes with Writer.ProgrammedChanged and Writer.Resync.
type PeerSource interface {
	// PeerReports returns one Report per live replica other than this one
	// that serves proxies, in a stable order (by replica name). A replica
	// whose reports cannot be read yet is returned as not Known.
	PeerReports(key translator.PolicyKey) []Report
	// Synced is false until the reports have been read once (a new
	// leader's first list). The writer writes nothing until then: what it
	// could write is Pending for every policy, over the verdict the
	// previous leader wrote from the same reports. The source resyncs
	// every policy (Writer.Resync) once they are read.
	Synced() bool
}

// Aggregate combines the replicas' reports about one policy into the
// distribution that decides its Programmed condition for generation gen
// (the generation this status describes), for ProgrammedCondition:
//
//   - a rejection of gen on any replica shows: Rejected and Proxies are
//     summed over the replicas at gen, Error is the first one in report
//     order;
//   - otherwise a replica that has not translated the policy (not Known)
//     or reports an older generation keeps it pending: its proxies may not
//     have gen yet, and may be other proxies than at the older generation.
//     Lagging names the first such replica (this replica's own report has
//     no name: the message then names none);
//   - otherwise a replica ahead of gen keeps it pending until gen catches
//     up (the returned Generation is the newest reported);
//   - otherwise the counts are summed: Programmed once every replica's
//     affected proxies have ACKed gen.
//
// known is false when no report says anything (no reports, or a replica
// that has not translated the policy and no rejection elsewhere).
func Aggregate(gen int64, reports []Report) (d Distribution, known bool) {
	if len(reports) == 0 {
		return Distribution{}, false
	}
	sum := Distribution{Generation: gen}
	unknown := false
	older, newer := gen, gen
	lagging, seen := "", false // the first replica that has not pushed gen
	for _, r := range reports {
		if (!r.Known || r.Generation < gen) && !seen {
			lagging, seen = r.Replica, true
		}
		switch {
		case !r.Known:
			unknown = true
		case r.Generation < gen:
			older = min(older, r.Generation)
		case r.Generation > gen:
			newer = max(newer, r.Generation)
		default:
			sum.Proxies += r.Proxies
			sum.Acked += r.Acked
			sum.Rejected += r.Rejected
			if sum.Error == "" && r.Rejected > 0 {
				sum.Error = r.Error
			}
		}
	}
	switch {
	case sum.Rejected > 0:
		return sum, true
	case unknown:
		return Distribution{Lagging: lagging}, false
	case older < gen:
		return Distribution{Generation: older, Lagging: lagging}, true
	case newer > gen:
		return Distribution{Generation: newer}, true
	}
	return sum, true
}
