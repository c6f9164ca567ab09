package store

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// flush is one simulated batch: when it was flushed, and the arrival times
// of its events (relative to the start).
type flush struct {
	at     time.Duration
	events []time.Duration
}

// simulate drives a Debouncer with events at the given offsets, advancing
// a fake clock in 1 ms steps and flushing whenever it is due, as the
// store's loop does with a real timer. It runs until `until`.
func simulate(t *testing.T, quiet, maxDelay time.Duration, events []time.Duration, until time.Duration) []flush {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(epoch)
	d := NewDebouncer(clk, quiet, maxDelay)
	var out []flush
	var held []time.Duration
	next := 0
	for now := time.Duration(0); now <= until; now += time.Millisecond {
		clk.SetTime(epoch.Add(now))
		for next < len(events) && events[next] <= now {
			d.Event()
			held = append(held, events[next])
			next++
		}
		if d.Due() {
			first, n := d.Flush()
			if n != len(held) {
				t.Fatalf("at %v: Flush reported %d events, %d were recorded", now, n, len(held))
			}
			if got := first.Sub(epoch); got != held[0] {
				t.Fatalf("at %v: Flush reported first event at %v, want %v", now, got, held[0])
			}
			out = append(out, flush{at: now, events: held})
			held = nil
		}
	}
	if len(held) > 0 {
		t.Fatalf("%d events still pending at the end of the simulation: %v", len(held), held)
	}
	return out
}

func every(interval, from, to time.Duration) []time.Duration {
	var out []time.Duration
	for at := from; at < to; at += interval {
		out = append(out, at)
	}
	return out
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestDebounceLoneEventFlushesAtOnce(t *testing.T) {
	got := simulate(t, ms(100), time.Second, []time.Duration{ms(500)}, 2*time.Second)
	if len(got) != 1 || got[0].at != ms(500) {
		t.Fatalf("flushes = %+v, want one at 500ms (leading edge)", got)
	}
}

func TestDebounceFirstEventEverIsLeading(t *testing.T) {
	// The very first event must not wait for a quiet period measured from
	// the zero time.
	got := simulate(t, ms(100), time.Second, []time.Duration{0}, time.Second)
	if len(got) != 1 || got[0].at != 0 {
		t.Fatalf("flushes = %+v, want one at 0", got)
	}
}

func TestDebounceBurstIsCoalesced(t *testing.T) {
	got := simulate(t, ms(100), time.Second, []time.Duration{0, ms(10), ms(20), ms(30)}, time.Second)
	// 0 is leading; 10..30 are held until 100ms after the last of them.
	want := []flush{{0, []time.Duration{0}}, {ms(130), []time.Duration{ms(10), ms(20), ms(30)}}}
	assertFlushes(t, got, want)
}

func TestDebounceSpacedEventsAreEachImmediate(t *testing.T) {
	events := every(ms(150), 0, 2*time.Second)
	got := simulate(t, ms(100), time.Second, events, 3*time.Second)
	if len(got) != len(events) {
		t.Fatalf("%d flushes for %d events spaced more than the quiet period: %+v", len(got), len(events), got)
	}
	for i, f := range got {
		if f.at != events[i] {
			t.Errorf("event at %v flushed at %v, want at once", events[i], f.at)
		}
	}
}

// TestDebounce20ChangesPerSecondNeverStarve is the Istio failure: a
// quiet-period debounce fed 20 changes a second never sees its quiet
// period. Ours must flush every change within maxDelay, keep flushing
// during the stream, and flush the tail one quiet period after it ends.
func TestDebounce20ChangesPerSecondNeverStarve(t *testing.T) {
	for _, tc := range []struct {
		name            string
		quiet, maxDelay time.Duration
		interval        time.Duration
	}{
		{"20/s defaults", ms(100), time.Second, ms(50)},
		{"just under the quiet period", ms(100), time.Second, ms(99)},
		{"1000/s", ms(100), time.Second, ms(1)},
		{"20/s, long quiet period", ms(500), ms(2000), ms(50)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const streamFor = 10 * time.Second
			events := every(tc.interval, 0, streamFor)
			got := simulate(t, tc.quiet, tc.maxDelay, events, streamFor+5*time.Second)

			var worst time.Duration
			for _, f := range got {
				for _, e := range f.events {
					worst = max(worst, f.at-e)
				}
			}
			if worst > tc.maxDelay {
				t.Errorf("an event waited %v, more than maxDelay %v", worst, tc.maxDelay)
			}
			// During the stream, batches keep coming: at most maxDelay after
			// the first event that follows the previous flush.
			for i := 1; i < len(got); i++ {
				if got[i].at <= streamFor && got[i].at-got[i-1].at > tc.maxDelay+tc.interval {
					t.Errorf("no flush between %v and %v during the stream", got[i-1].at, got[i].at)
				}
			}
			// Coalescing still happens: far fewer batches than events.
			if min := int(streamFor / tc.maxDelay); len(got) < min || len(got) > 2*min+2 {
				t.Errorf("%d flushes for %d events over %v; want about one per maxDelay (%d)", len(got), len(events), streamFor, min)
			}
			// The tail is flushed one quiet period after the last event, not
			// at the next maxDelay.
			last := got[len(got)-1]
			if lastEvent := events[len(events)-1]; last.at > lastEvent+tc.quiet {
				t.Errorf("tail flushed at %v, want by %v (quiet period after the last event)", last.at, lastEvent+tc.quiet)
			}
		})
	}
}

func TestDebounceQuietPeriodZeroFlushesEveryEvent(t *testing.T) {
	events := every(ms(1), 0, ms(50))
	got := simulate(t, 0, time.Second, events, time.Second)
	if len(got) != len(events) {
		t.Fatalf("%d flushes for %d events with quietPeriod 0", len(got), len(events))
	}
	for i, f := range got {
		if f.at != events[i] {
			t.Errorf("event at %v flushed at %v", events[i], f.at)
		}
	}
}

func TestDebounceSetDelaysMovesPendingDeadline(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(epoch)
	d := NewDebouncer(clk, ms(100), time.Second)
	d.Event() // leading
	d.Flush()
	clk.SetTime(epoch.Add(ms(10)))
	d.Event() // held
	if dl, _ := d.Deadline(); dl != epoch.Add(ms(110)) {
		t.Fatalf("deadline = %v, want +110ms", dl.Sub(epoch))
	}
	d.SetDelays(ms(5000), ms(30000))
	if dl, _ := d.Deadline(); dl != epoch.Add(ms(5010)) {
		t.Fatalf("after SetDelays(5s, 30s): deadline = %v, want +5010ms", dl.Sub(epoch))
	}
	d.SetDelays(ms(20), ms(20))
	if dl, _ := d.Deadline(); dl != epoch.Add(ms(30)) {
		t.Fatalf("after SetDelays(20ms, 20ms): deadline = %v, want +30ms", dl.Sub(epoch))
	}
}

func TestDebounceClampsDelays(t *testing.T) {
	d := NewDebouncer(clocktesting.NewFakePassiveClock(epoch), ms(500), ms(100))
	if q, m := d.Delays(); q != ms(500) || m != ms(500) {
		t.Errorf("Delays() = %v, %v; want maxDelay raised to the quiet period", q, m)
	}
	d.SetDelays(-time.Second, -time.Second)
	if q, m := d.Delays(); q != 0 || m != 0 {
		t.Errorf("Delays() = %v, %v; want 0, 0", q, m)
	}
}

func TestDebounceNothingPending(t *testing.T) {
	d := NewDebouncer(clocktesting.NewFakePassiveClock(epoch), ms(100), time.Second)
	if _, ok := d.Deadline(); ok {
		t.Error("Deadline ok with nothing pending")
	}
	if d.Due() {
		t.Error("Due with nothing pending")
	}
	if _, n := d.Flush(); n != 0 {
		t.Errorf("Flush of nothing returned %d events", n)
	}
}

func assertFlushes(t *testing.T, got, want []flush) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("flushes = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].at != want[i].at || len(got[i].events) != len(want[i].events) {
			t.Fatalf("flush %d = %+v, want %+v", i, got[i], want[i])
		}
		for j := range want[i].events {
			if got[i].events[j] != want[i].events[j] {
				t.Fatalf("flush %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	}
}
