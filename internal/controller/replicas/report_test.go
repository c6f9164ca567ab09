package replicas

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/translator"
)

var (
	split  = translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: "shop", Name: "checkout"}
	retry  = translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "checkout"}
	auth   = translator.PolicyKey{Kind: translator.KindAuthPolicy, Namespace: "shop", Name: "checkout"}
	meshcf = translator.PolicyKey{Kind: "MeshConfig", Name: "weft"}
)

func TestEncodeDecode(t *testing.T) {
	s := Snapshot{Proxies: 7, Policies: map[translator.PolicyKey]status.Distribution{
		split:  {Generation: 3, Proxies: 5, Acked: 4},
		retry:  {Generation: 2},
		auth:   {Generation: 9, Proxies: 2, Acked: 0, Rejected: 2, Error: `rbac: "quoted" \ and unicode ✓`},
		meshcf: {Generation: 1, Proxies: 7, Acked: 7},
	}}
	enc := Encode(s)
	// Readable with kubectl, and compact: an entry without proxies is its
	// generation alone.
	for _, want := range []string{`"v":1`, `"proxies":7`, `"RetryPolicy/shop/checkout":[2]`, `"TrafficSplit/shop/checkout":[3,5,4]`,
		`"MeshConfig//weft":[1,7,7]`, `"AuthPolicy/shop/checkout":[9,2,0,2,"rbac: \"quoted\" \\ and unicode ✓"]`} {
		if !strings.Contains(enc, want) {
			t.Errorf("Encode = %s; lacks %s", enc, want)
		}
	}
	got, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for i := 0; i < 20; i++ {
		if again := Encode(s); again != enc {
			t.Fatalf("Encode is not deterministic:\n%s\n%s", enc, again)
		}
	}
}

func TestEncodeBoundsErrors(t *testing.T) {
	long := strings.Repeat("é", maxErrorBytes) // 2 bytes each: cut inside a rune
	got, err := Decode(Encode(Snapshot{Proxies: 1, Policies: map[translator.PolicyKey]status.Distribution{
		split: {Generation: 1, Proxies: 1, Rejected: 1, Error: long}}}))
	if err != nil {
		t.Fatal(err)
	}
	msg := got.Policies[split].Error
	if len(msg) > maxErrorBytes+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(msg, "…")) || !strings.HasSuffix(msg, "…") {
		t.Errorf("a long error became %d bytes: %.40q…", len(msg), msg)
	}
}

// TestEncodeTruncates: a mesh with more policies than a Lease holds keeps
// the entries that can hold a status back, rejections first, and says it
// is incomplete.
func TestEncodeTruncates(t *testing.T) {
	s := Snapshot{Proxies: 3, Policies: map[translator.PolicyKey]status.Distribution{}}
	for i := 0; i < 20000; i++ {
		s.Policies[translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: "team-" + fmt.Sprint(i%50), Name: fmt.Sprintf("split-%05d", i)}] =
			status.Distribution{Generation: int64(i%7 + 1)}
	}
	s.Policies[split] = status.Distribution{Generation: 3, Proxies: 2, Acked: 1}
	s.Policies[auth] = status.Distribution{Generation: 9, Proxies: 2, Rejected: 1, Error: "no"}
	enc := Encode(s)
	if len(enc) > maxReportBytes+1024 {
		t.Fatalf("report is %d bytes, over the limit %d", len(enc), maxReportBytes)
	}
	got, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Truncated || len(got.Policies) != 2 || got.Policies[split] != s.Policies[split] || got.Policies[auth] != s.Policies[auth] {
		t.Errorf("truncated report = %+v; want the two policies with proxies, marked truncated", got)
	}

	// Too many affected policies even for that: rejections come first.
	s = Snapshot{Proxies: 3, Policies: map[translator.PolicyKey]status.Distribution{}}
	for i := 0; i < 20000; i++ {
		s.Policies[translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: "shop", Name: fmt.Sprintf("split-%05d", i)}] =
			status.Distribution{Generation: 1, Proxies: 3, Acked: 3}
	}
	rejected := translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: "shop", Name: "split-19999"}
	s.Policies[rejected] = status.Distribution{Generation: 1, Proxies: 3, Acked: 2, Rejected: 1, Error: "bad"}
	got, err = Decode(Encode(s))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Truncated || got.Policies[rejected] != s.Policies[rejected] || len(got.Policies) >= 20000 || len(got.Policies) < 1000 {
		t.Errorf("truncated report holds %d policies (rejection kept: %v)", len(got.Policies), got.Policies[rejected] == s.Policies[rejected])
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "not a report"},
		{"{", "not a report"},
		{`{"v":2,"proxies":1,"policies":{}}`, "format 2"},
		{`{"v":1,"proxies":1,"policies":{"TrafficSplit/shop":[1]}}`, "malformed entry"},
		{`{"v":1,"proxies":1,"policies":{"TrafficSplit/shop/x":[1,2]}}`, "malformed entry"},
		{`{"v":1,"proxies":1,"policies":{"TrafficSplit/shop/x":["1"]}}`, `entry "TrafficSplit/shop/x"`},
		{`{"v":1,"proxies":1,"policies":{"TrafficSplit/shop/x":[1,1,0,1,2]}}`, `entry "TrafficSplit/shop/x"`},
	} {
		if _, err := Decode(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), Annotation) {
			t.Errorf("Decode(%q) = %v; want an error naming %s and saying %q", tc.in, err, Annotation, tc.want)
		}
	}
}

func TestReportsFor(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const deadline = 20 * time.Second
	live := now.Add(-deadline + time.Second)
	snap := func(proxies int, truncated bool, ps map[translator.PolicyKey]status.Distribution) Snapshot {
		return Snapshot{Proxies: proxies, Truncated: truncated, Policies: ps}
	}
	has := map[translator.PolicyKey]status.Distribution{split: {Generation: 2, Proxies: 1, Acked: 1}}
	for _, tc := range []struct {
		name  string
		peers map[string]peer
		want  []status.Report
	}{
		{"no peers", nil, nil},
		{"a live peer's entry", map[string]peer{"b": {snap: snap(3, false, has), seen: live}},
			[]status.Report{{Replica: "b", Known: true, Distribution: has[split]}}},
		{"a live peer that has not translated the policy", map[string]peer{"b": {snap: snap(3, false, nil), seen: live}},
			[]status.Report{{Replica: "b"}}},
		{"a peer without proxies holds nothing back", map[string]peer{"b": {snap: snap(0, false, nil), seen: live}}, nil},
		{"a peer past the deadline is not counted", map[string]peer{"b": {snap: snap(3, false, nil), seen: now.Add(-deadline - time.Second)}}, nil},
		{"a truncated report without the policy says nothing", map[string]peer{"b": {snap: snap(3, true, nil), seen: live}}, nil},
		{"a truncated report with the policy counts", map[string]peer{"b": {snap: snap(3, true, has), seen: live}},
			[]status.Report{{Replica: "b", Known: true, Distribution: has[split]}}},
		{"an unreadable report holds nothing back", map[string]peer{"b": {snap: snap(3, false, nil), seen: live, ignored: true}}, nil},
		{"the leader's own report is read from memory, not from its Lease", map[string]peer{"b": {snap: snap(3, false, has), seen: live, self: true}}, nil},
		{"several peers, by name", map[string]peer{
			"c": {snap: snap(1, false, has), seen: live},
			"a": {snap: snap(1, false, nil), seen: live},
			"b": {snap: snap(0, false, has), seen: live},
		}, []status.Report{{Replica: "a"}, {Replica: "c", Known: true, Distribution: has[split]}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := reportsFor(split, tc.peers, now, deadline)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestChangedKeys(t *testing.T) {
	d := func(gen int64, proxies, acked int) status.Distribution {
		return status.Distribution{Generation: gen, Proxies: proxies, Acked: acked}
	}
	base := Snapshot{Proxies: 2, Policies: map[translator.PolicyKey]status.Distribution{split: d(1, 2, 2), retry: d(1, 0, 0)}}
	for _, tc := range []struct {
		name string
		cur  Snapshot
		keys []translator.PolicyKey
		all  bool
	}{
		{"nothing", base, nil, false},
		{"an ACK", Snapshot{Proxies: 2, Policies: map[translator.PolicyKey]status.Distribution{split: d(1, 2, 1), retry: d(1, 0, 0)}},
			[]translator.PolicyKey{split}, false},
		{"a new generation, a new and a deleted policy", Snapshot{Proxies: 2, Policies: map[translator.PolicyKey]status.Distribution{split: d(2, 2, 0), auth: d(1, 0, 0)}},
			[]translator.PolicyKey{auth, retry, split}, false},
		{"another proxy count changes nothing by itself", Snapshot{Proxies: 5, Policies: base.Policies}, nil, false},
		{"the last proxy left", Snapshot{Proxies: 0, Policies: base.Policies}, nil, true},
		{"truncated", Snapshot{Proxies: 2, Truncated: true, Policies: base.Policies}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, all := changedKeys(base, tc.cur)
			slices.SortFunc(keys, func(a, b translator.PolicyKey) int { return strings.Compare(keyString(a), keyString(b)) })
			if all != tc.all || !slices.Equal(keys, tc.keys) {
				t.Errorf("changedKeys = %v, %v; want %v, %v", keys, all, tc.keys, tc.all)
			}
		})
	}
}

// BenchmarkEncodeDecode: one report, 2% of its policies on this
// replica's proxies, as the publisher encodes it (at most 4 times a
// second) and the leader decodes it on each change. At 6,000 policies the
// report no longer fits and is truncated.
func BenchmarkEncodeDecode(b *testing.B) {
	for _, n := range []int{1000, 4000, 6000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := Snapshot{Proxies: 300, Policies: map[translator.PolicyKey]status.Distribution{}}
			for i := 0; i < n; i++ {
				d := status.Distribution{Generation: int64(i%9 + 1)}
				if i%50 == 0 {
					d.Proxies, d.Acked = 30, 29
				}
				s.Policies[translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: fmt.Sprintf("team-%02d", i%40), Name: fmt.Sprintf("checkout-canary-%04d", i)}] = d
			}
			var size int
			var truncated bool
			for b.Loop() {
				enc := Encode(s)
				got, err := Decode(enc)
				if err != nil {
					b.Fatal(err)
				}
				size, truncated = len(enc), got.Truncated
			}
			b.ReportMetric(float64(size), "bytes/report")
			if truncated {
				b.ReportMetric(1, "truncated")
			}
		})
	}
}
