// Package replicas gives each weft-controller replica one report Lease,
// named after its pod, and lets the leader read everyone's. Each replica
// serves its own proxies and knows only their ACKs; decisions that need
// every proxy are the leader's. The report carries:
//
//   - the replica's distribution: for each policy it has translated, the
//     generation and how many of its proxies it affects, ACKed and
//     rejected (annotation weft.dev/distribution), which the leader's
//     status writer aggregates with its own (status.Aggregate) to write
//     Programmed;
//   - named Sections other parts of the controller publish through the
//     same Lease: the root rotation's trust facts (weft.dev/trust,
//     internal/controller).
//
// Publisher writes it (coalesced, only on change, with a heartbeat;
// deleted when the replica stops cleanly); Collector, on the leader,
// watches the reports and ignores and deletes one it has not seen change
// within the deadline, judged on its own clock.
//
// See docs/design/042-programmed-across-replicas.md.
package replicas

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/translator"
)

const (
	// Annotation holds the report (Encode) on a replica's Lease.
	Annotation = "weft.dev/distribution"
	// LabelKey, with value LabelValue, marks the Leases that are replica
	// reports, for the leader's watch and for `kubectl get lease -l`.
	LabelKey   = "weft.dev/report"
	LabelValue = "replica"

	// formatVersion is the report format. A leader ignores reports of a
	// version it does not know (a rolling upgrade then shows Programmed
	// from the replicas it understands, rather than pending forever).
	formatVersion = 1

	// maxReportBytes keeps a report inside the API server's limit on a
	// Lease's annotations (256 KiB in all), with room for the rest.
	maxReportBytes = 200 << 10
	// maxErrorBytes bounds one quoted proxy error in a report.
	maxErrorBytes = 1024
)

// Snapshot is what one replica reports.
type Snapshot struct {
	// Proxies is how many proxies are connected to the replica. A replica
	// without any cannot hold a policy back.
	Proxies int
	// Policies holds every policy the replica has translated and pushed:
	// the translated generation and its distribution among the replica's
	// proxies (Proxies 0 when none of them needs it).
	Policies map[translator.PolicyKey]status.Distribution
	// Truncated says the report was too large for its Lease: only the
	// policies that affect some proxy are listed (see Encode), and a
	// policy missing from it says nothing (rather than "not translated").
	Truncated bool
}

// wire is the JSON form. A policy is "Kind/namespace/name" (names cannot
// hold a slash) → [generation], or [generation, proxies, acked] when it
// affects proxies, or [generation, proxies, acked, rejected, "error"] when
// some rejected it: the common entries stay a few bytes long.
type wire struct {
	Version   int                          `json:"v"`
	Proxies   int                          `json:"proxies"`
	Truncated bool                         `json:"truncated,omitempty"`
	Policies  map[string][]json.RawMessage `json:"policies"`
}

// Encode returns the report's annotation value. The encoding is
// deterministic (JSON sorts map keys), so an unchanged snapshot encodes to
// the same string and costs no write. A report that would exceed
// maxReportBytes keeps only the policies that affect proxies (those that
// can hold a status back) and says so.
func Encode(s Snapshot) string {
	entries := make(map[string][]json.RawMessage, len(s.Policies))
	size := 0
	for k, d := range s.Policies {
		e := entry(d)
		entries[keyString(k)] = e
		size += len(keyString(k)) + 8
		for _, f := range e {
			size += len(f) + 1
		}
	}
	w := wire{Version: formatVersion, Proxies: s.Proxies, Truncated: s.Truncated, Policies: entries}
	if size > maxReportBytes {
		w.Truncated = true
		keys := make([]string, 0, len(entries))
		for k, e := range entries {
			if len(e) == 1 { // no affected proxy
				delete(entries, k)
				continue
			}
			keys = append(keys, k)
		}
		// Still too large: keep the rejections first, then what fits.
		slices.SortFunc(keys, func(a, b string) int {
			if ra, rb := len(entries[a]) > 3, len(entries[b]) > 3; ra != rb {
				if ra {
					return -1
				}
				return 1
			}
			return strings.Compare(a, b)
		})
		size = 0
		for _, k := range keys {
			n := len(k) + 8
			for _, f := range entries[k] {
				n += len(f) + 1
			}
			if size+n > maxReportBytes {
				delete(entries, k)
				continue
			}
			size += n
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		panic(err) // ints and strings always marshal
	}
	return string(b)
}

func entry(d status.Distribution) []json.RawMessage {
	num := func(n int64) json.RawMessage { return json.RawMessage(fmt.Sprint(n)) }
	e := []json.RawMessage{num(d.Generation)}
	if d.Proxies == 0 && d.Rejected == 0 {
		return e
	}
	e = append(e, num(int64(d.Proxies)), num(int64(d.Acked)))
	if d.Rejected == 0 {
		return e
	}
	msg := d.Error
	if len(msg) > maxErrorBytes {
		msg = strings.ToValidUTF8(msg[:maxErrorBytes], "") + "…"
	}
	q, _ := json.Marshal(msg)
	return append(e, num(int64(d.Rejected)), q)
}

// Decode parses an annotation written by Encode.
func Decode(s string) (Snapshot, error) {
	var w wire
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return Snapshot{}, fmt.Errorf("annotation %s is not a report: %w", Annotation, err)
	}
	if w.Version != formatVersion {
		return Snapshot{}, fmt.Errorf("annotation %s has report format %d; this weft-controller reads format %d", Annotation, w.Version, formatVersion)
	}
	out := Snapshot{Proxies: w.Proxies, Truncated: w.Truncated, Policies: make(map[translator.PolicyKey]status.Distribution, len(w.Policies))}
	for ks, e := range w.Policies {
		k, ok := parseKey(ks)
		if !ok || len(e) == 0 || len(e) == 2 || len(e) == 4 || len(e) > 5 {
			return Snapshot{}, fmt.Errorf("annotation %s: malformed entry %q", Annotation, ks)
		}
		var d status.Distribution
		var n [4]int64
		for i := 0; i < len(e) && i < 4; i++ {
			if err := json.Unmarshal(e[i], &n[i]); err != nil {
				return Snapshot{}, fmt.Errorf("annotation %s: entry %q: %w", Annotation, ks, err)
			}
		}
		d.Generation, d.Proxies, d.Acked, d.Rejected = n[0], int(n[1]), int(n[2]), int(n[3])
		if len(e) == 5 {
			if err := json.Unmarshal(e[4], &d.Error); err != nil {
				return Snapshot{}, fmt.Errorf("annotation %s: entry %q: %w", Annotation, ks, err)
			}
		}
		out.Policies[k] = d
	}
	return out, nil
}

func keyString(k translator.PolicyKey) string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

func parseKey(s string) (translator.PolicyKey, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return translator.PolicyKey{}, false
	}
	return translator.PolicyKey{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, true
}

// peer is the leader's view of another replica's report.
type peer struct {
	snap Snapshot
	// seen is when the leader last saw the report change (its own clock:
	// replicas' clocks may disagree, so the Lease's renewTime is for
	// people, not for the deadline).
	seen time.Time
	// ignored: the distribution could not be read (Decode failed).
	ignored bool
	// sections are the report's other annotations (weft.dev/*), by key.
	sections map[string]string
	// self: this replica's own report (its distribution is read from
	// memory; its sections count like anyone's).
	self bool
}

// reportsFor is what the peers say about key, for status.Aggregate: one
// report per peer that counts, by name. A peer counts while it was seen
// within deadline of now and serves proxies. A peer whose (complete)
// report lacks key has not translated that policy yet.
func reportsFor(key translator.PolicyKey, peers map[string]peer, now time.Time, deadline time.Duration) []status.Report {
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []status.Report
	for _, n := range names {
		p := peers[n]
		if p.self || p.ignored || now.Sub(p.seen) > deadline || p.snap.Proxies == 0 {
			continue
		}
		d, ok := p.snap.Policies[key]
		if !ok && p.snap.Truncated {
			continue // unknown either way; see Snapshot.Truncated
		}
		out = append(out, status.Report{Replica: n, Known: ok, Distribution: d})
	}
	return out
}

// changedKeys is which policies' reports differ between two snapshots of
// one replica; all is true when the change can affect any policy (the
// replica started or stopped serving proxies, or its report's
// completeness changed), including those neither snapshot lists.
func changedKeys(old, cur Snapshot) (keys []translator.PolicyKey, all bool) {
	if (old.Proxies == 0) != (cur.Proxies == 0) || old.Truncated != cur.Truncated {
		return nil, true
	}
	for k, d := range cur.Policies {
		if o, ok := old.Policies[k]; !ok || o != d {
			keys = append(keys, k)
		}
	}
	for k := range old.Policies {
		if _, ok := cur.Policies[k]; !ok {
			keys = append(keys, k)
		}
	}
	return keys, false
}
