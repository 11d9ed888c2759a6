// Package origins names the replication origins of a two-way sync, which
// datasync sync creates and applies under, and datasync verify --two-way
// reads and repairs under: one place for the names both must agree on.
package origins

import "strings"

// ToTarget is the origin of the sessions of the two-way sync called name
// that apply changes into the target (the forward stream and the first
// copy).
func ToTarget(name string) string { return "datasync_" + name + "_to_target" }

// ToSource is the origin of the sessions that apply changes into the
// source (the reverse stream).
func ToSource(name string) string { return "datasync_" + name + "_to_source" }

// Repair is the origin under which datasync verify --two-way --repair
// writes into the side that origin (ToTarget or ToSource) applies into: a
// repair may then run beside the sync, whose apply session holds origin
// itself on PostgreSQL 15, and the sync's streams drop its writes as they
// drop their own. It ends in "_repair", which no ToTarget or ToSource of
// any sync name does, so it is never another sync's origin.
func Repair(origin string) string { return origin + "_repair" }

// IsRepair reports whether origin is a Repair origin.
func IsRepair(origin string) bool { return strings.HasSuffix(origin, "_repair") }

// ResetTimeSQL, run in a transaction of a session under a replication
// origin, makes the transaction's commit time the time it commits.
// PostgreSQL otherwise gives every transaction of such a session the commit
// time of the session's first, unless pg_replication_origin_xact_setup
// sets one.
const ResetTimeSQL = `SELECT pg_replication_origin_xact_reset()`
