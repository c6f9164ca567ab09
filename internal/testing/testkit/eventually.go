// Package testkit holds the helpers weft's tests share, so that each is
// written once: waiting for a condition, acting as weft-controller's RBAC,
// and serving an ADS on loopback.
package testkit

import (
	"testing"
	"time"
)

// Patience is how long Eventually waits. It is long on purpose: a test
// asserts that something happens, not how fast (speed is measured by
// benchmarks and the load harness), and must not fail on a slow machine.
const Patience = 90 * time.Second

// Eventually polls cond until it returns nil, and fails the test with
// what and cond's last error after Patience.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	EventuallyWithin(t, what, Patience, cond)
}

// EventuallyWithin is Eventually with its own timeout.
func EventuallyWithin(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// EventuallyTrue polls cond until it is true, and fails the test with what
// after Patience.
func EventuallyTrue(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%v)", what, Patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
