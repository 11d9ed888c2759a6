// Package mapping describes which source table moves to which target table,
// with which key, columns and row filter, and checks such a mapping against
// both databases before anything is written (the preflight).
//
// backfill, sync and verify all work through a resolved *Table: the same
// columns in the same (target) order on both sides, the source side cast to
// the target's types where they differ, and the same key.
package mapping
