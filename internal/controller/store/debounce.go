package store

import (
	"time"

	"k8s.io/utils/clock"
)

// Default holdoff delays; MeshConfig spec.push overrides them
// (docs/design/040-watch-store-and-batching.md).
const (
	DefaultQuietPeriod = 100 * time.Millisecond
	DefaultMaxDelay    = time.Second
)

// Debouncer decides when the events seen so far are flushed as one batch.
//
// The rule, with quiet period Q and maximum delay M:
//
//   - An event that follows at least Q without events is flushed at once
//     (leading edge): a lone change costs no delay at all.
//   - An event that follows another within Q is held, and the batch is
//     flushed when Q passes with no further event (trailing edge)...
//   - ...or when M has passed since the batch's first event, whichever
//     comes first. A steady stream of events (20 endpoint changes a second
//     never leave 100 ms of quiet) is therefore flushed every M at the
//     latest, instead of waiting for a quiet that never comes (Istio's
//     measured failure: 11 s p99 with a 10 s maximum).
//
// It is a pure state machine: it reads the injected clock and never sleeps
// or starts goroutines; the caller arms a timer for Deadline. It is not
// safe for concurrent use; the store calls it under its lock.
type Debouncer struct {
	clock           clock.PassiveClock
	quiet, maxDelay time.Duration

	// events in the pending batch; 0 means nothing is pending.
	events int
	// leading is true when the pending batch began after a quiet period:
	// it is due at once.
	leading bool
	// first and last are the times of the pending batch's first event and
	// of the most recent event ever seen (flushed or not).
	first, last time.Time
	seen        bool
}

// NewDebouncer returns a debouncer with the given delays (see SetDelays).
func NewDebouncer(c clock.PassiveClock, quiet, maxDelay time.Duration) *Debouncer {
	d := &Debouncer{clock: c}
	d.SetDelays(quiet, maxDelay)
	return d
}

// SetDelays changes the delays; a pending batch's deadline moves at once.
// A negative quiet period is 0 (flush every event at once); a maximum
// delay below the quiet period is raised to it, as MeshConfig's validation
// requires anyway.
func (d *Debouncer) SetDelays(quiet, maxDelay time.Duration) {
	d.quiet = max(quiet, 0)
	d.maxDelay = max(maxDelay, d.quiet)
}

// Delays returns the quiet period and maximum delay in effect.
func (d *Debouncer) Delays() (quiet, maxDelay time.Duration) { return d.quiet, d.maxDelay }

// Event records one event now.
func (d *Debouncer) Event() {
	now := d.clock.Now()
	if d.events == 0 {
		d.first = now
		d.leading = !d.seen || now.Sub(d.last) >= d.quiet
	}
	d.events++
	d.last, d.seen = now, true
}

// Pending is the number of events not yet flushed.
func (d *Debouncer) Pending() int { return d.events }

// Deadline is when the pending batch is due; ok is false when nothing is
// pending. A deadline in the past means "now".
func (d *Debouncer) Deadline() (deadline time.Time, ok bool) {
	if d.events == 0 {
		return time.Time{}, false
	}
	if d.leading {
		return d.first, true
	}
	trailing := d.last.Add(d.quiet)
	bound := d.first.Add(d.maxDelay)
	if bound.Before(trailing) {
		return bound, true
	}
	return trailing, true
}

// Due says whether the pending batch should be flushed now.
func (d *Debouncer) Due() bool {
	dl, ok := d.Deadline()
	return ok && !d.clock.Now().Before(dl)
}

// Flush ends the pending batch and returns the time of its first event and
// how many events it held. Events after Flush start a new batch, which is
// leading only if they follow the last event by the quiet period: a flush
// is not a quiet period, so a stream cannot turn every event into a batch
// of its own.
func (d *Debouncer) Flush() (first time.Time, events int) {
	first, events = d.first, d.events
	d.events, d.leading, d.first = 0, false, time.Time{}
	return first, events
}
