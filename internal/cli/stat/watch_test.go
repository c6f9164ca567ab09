package stat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBetween(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 0, time.UTC)
	s := func(n float64) Scrape {
		return Scrape{"inbound|80||": {Requests: n, HasRequests: true}}
	}
	boom := errors.New("connection refused")
	before := []Read{
		{Name: "ok", At: at, Scrape: s(10)},
		{Name: "first-failed", At: at, Err: boom},
		{Name: "second-failed", At: at, Scrape: s(1)},
	}
	after := []Read{
		{Name: "ok", At: at.Add(2 * time.Second), Scrape: s(30)},
		{Name: "first-failed", At: at.Add(2 * time.Second), Scrape: s(5)},
		{Name: "second-failed", At: at.Add(2 * time.Second), Err: boom},
		{Name: "new", At: at.Add(2 * time.Second), Scrape: s(5)},
	}
	got := Between(before, after)
	if len(got) != 3 {
		t.Fatalf("%d sources, want 3 (a source new in the later round waits for the next window): %+v", len(got), got)
	}
	if w := got[0].Window; w == nil || w.Seconds != 2 || w.Clusters["inbound|80||"].Requests != 20 {
		t.Errorf("ok: %+v", got[0])
	}
	if got[1].Err == nil || got[1].Err.Error() != "first read: connection refused" {
		t.Errorf("first-failed: %v", got[1].Err)
	}
	if got[2].Err != boom {
		t.Errorf("second-failed: %v", got[2].Err)
	}
}

// counting serves a counter that grows by 10 a read, so every window
// has requests.
func counting(t *testing.T) string {
	var mu sync.Mutex
	n := 0
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		v := n * 10
		mu.Unlock()
		fmt.Fprintf(w, "# TYPE envoy_cluster_upstream_rq_total counter\n"+
			"envoy_cluster_upstream_rq_total{envoy_cluster_name=%q} %d\n"+
			"envoy_cluster_upstream_rq_total{envoy_cluster_name=%q} %d\n",
			"outbound|80||checkout-v1.shop.svc.cluster.local", v, "outbound|80||checkout-v2.shop.svc.cluster.local", v)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// TestWatch: a table every interval, redrawn; the TrafficSplits read
// before each one, so a weight changed while watching shows.
func TestWatch(t *testing.T) {
	var mu sync.Mutex
	weight := int32(90)
	live := Live{
		Scraper:  URLs{URLs: []string{counting(t)}},
		Interval: 30 * time.Millisecond,
		Splits: func(context.Context) ([]Split, error) {
			mu.Lock()
			defer mu.Unlock()
			return []Split{{Namespace: "shop", Root: "checkout", Backends: []SplitBackend{{Service: "checkout-v1", Weight: weight}, {Service: "checkout-v2", Weight: 100 - weight}}}}, nil
		},
	}
	var tables []*Table
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := live.Tables(ctx, func(tab *Table) error {
		tables = append(tables, tab)
		if len(tables) == 2 {
			mu.Lock()
			weight = 50
			mu.Unlock()
		}
		if len(tables) == 4 {
			return errors.New("enough")
		}
		return nil
	})
	if err == nil || err.Error() != "enough" {
		t.Fatal(err)
	}
	for i, tab := range tables {
		if len(tab.Rows) != 1 || len(tab.Rows[0].Backends) != 2 || tab.Rows[0].RequestsPerSecond <= 0 {
			t.Fatalf("table %d: %+v", i, tab)
		}
		// Each read adds 10 to both backends: half each.
		if s := *tab.Rows[0].Backends[0].Share; s != 0.5 {
			t.Errorf("table %d: observed share %v, want 0.5", i, s)
		}
	}
	if w := *tables[0].Rows[0].Backends[0].Weight; w != 0.9 {
		t.Errorf("first table: weight %v, want 0.9", w)
	}
	if w := *tables[3].Rows[0].Backends[0].Weight; w != 0.5 {
		t.Errorf("after the change: weight %v, want 0.5", w)
	}

	// Watch redraws: a cleared screen, the title, the table; Ctrl-C (the
	// context's end) is no error.
	var out bytes.Buffer
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := Watch(ctx, URLs{URLs: []string{counting(t)}}, 30*time.Millisecond, &syncWriter{w: &out}, Options{}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	frames := strings.Split(out.String(), clearScreen)
	if len(frames) < 3 || !strings.HasPrefix(frames[1], "weft stat svc   every 30ms   ") || !strings.Contains(frames[1], "checkout-v1") {
		t.Errorf("frames:\n%q", out.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
