// Package ramp advances a flag's rollout percentage one step per interval,
// e.g. ramp: {steps: [1, 5, 25, 50, 100], interval: 10m}, while the flag's
// guard holds, and stops a ramp when the guard trips until an operator
// resumes it.
//
// # Several replicas, one flags file
//
// Every proxy replica that reads the same flags file runs a [Controller],
// and the ramp must still advance once per interval, not once per replica.
// The controllers agree through two files beside the flags file:
//
//   - FLAGS.lock, locked with flock(2) (exclusive, advisory) around every
//     read-decide-write of the ramp state;
//   - FLAGS.ramp.json, the ramp state of every flag: when it last advanced,
//     to which step, and whether it is stopped (and why). It is replaced
//     atomically (temporary file, fsync, rename).
//
// Under the lock a controller re-reads the state file, advances a flag only
// when its last advance is at least one interval old, sets the percentage
// through the flags store, records the advance, and only then unlocks. A
// second controller taking the lock next sees the new last advance and
// leaves the flag alone. flock locks belong to an open file description, so
// two controllers in one process exclude each other too. It needs a local
// file system (flock over NFS is not dependable).
//
// # Schedule
//
// A ramp first seen by any controller starts its clock then: its first step
// is taken one interval later, so adding a ramp never moves a flag at once.
// Each advance sets the first step above the flag's current percentage; a
// flag at or above the last step is done. A percentage found below the step
// the ramp last set means an operator lowered it by hand: the ramp stops, as
// after a trip, rather than undo the operator's change.
//
// [Controller.Trip] is the guard's trip callback: it sets the flag's
// percentage to 0 through the store and stops its ramp ([Controller.Stop]
// alone stops a ramp without touching the percentage). The stop is persisted,
// so no replica advances the flag until [Controller.Resume], which takes the
// next step at the next tick and then one per interval again. A stop is
// recorded for a guarded flag without a ramp too, so its trip stays visible.
package ramp
