// Package guard watches the service outcomes of each guarded rollout flag and
// trips the flag's guard when a window of them breaches its limits.
//
// The proxy calls [Set.Record] once per request that a flag's route sent to
// its service (or meant to: every fallback counts, also those the client
// never saw). An outcome is an error when the service answered 5xx or the
// request fell back to the monolith for any reason. Record is lock free and
// does not allocate: a few atomic additions into the current slot.
//
// # Windows
//
// A guard's window is a sliding window made of ten slots of window/10 each.
// A background loop ([Set.Run], or [Set.Tick] from tests with a fake clock)
// closes the current slot at each slot boundary and evaluates the ten slots
// that closed last, so a window is evaluated every window/10 and a breach is
// seen at most one slot after the slot that completed it. A window with fewer
// than min_requests outcomes decides nothing. A window trips the guard when
//
//   - its error rate (errors / outcomes) is greater than max_error_rate, or
//   - its p99 latency is greater than max_p99.
//
// The p99 decision is exact: each outcome slower than max_p99 is counted, and
// the p99 (nearest rank) exceeds max_p99 exactly when more than
// floor(outcomes/100) of them were slower. The p99 printed in a trip's reason
// is an estimate from a fixed-bucket histogram: eight buckets per power of
// two of microseconds, so the figure is the upper bound of a bucket at most
// 12.5 % wider than its lower bound (and never below the true p99).
//
// An outcome counts in the slot that was current when it was recorded; an
// outcome recorded while the loop closes a slot may land in the slot just
// closed, after its window was evaluated, which only matters at the edges.
//
// # Trips
//
// A trip calls [Options.OnTrip] once, from the loop's goroutine, with a
// readable reason such as "error rate 0.307 > 0.02 over 1m0s (212
// requests)", and counts strangler_guard_trips_total{flag}. The proxy's
// callback sets the flag's percentage to 0 through the flags store (persisted
// like a manual change) and stops the flag's ramp. A tripped guard keeps its
// state (see [Set.State]) and does not trip again until [Set.Rearm], which the
// proxy calls when an operator resumes the flag.
package guard
