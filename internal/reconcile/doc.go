// Package reconcile compares a table in the source database with its mapped
// table in the target database, names every row that differs, and can make
// the target match the source.
//
// # Checksum bisection
//
// Comparing row by row would move both tables over the network. Instead each
// database reduces a key range to two numbers, its row count and the sum (as
// numeric, so order does not matter and nothing overflows) of a 64-bit hash of
// each row's canonical form. Both databases answer at the same time, and only
// these aggregates cross the network:
//
//  1. Bucket boundaries come from a sample of the keys: a TABLESAMPLE of
//     the larger table when it is big, else a keyset walk that keeps every
//     Nth key. Boundaries are keys that exist, so gaps in the key space cost
//     nothing, and any key type works, composite keys included. A key of one
//     integer column whose values fill enough of the span between the least
//     and the greatest (read from its index on both sides) needs no sample:
//     its buckets are the multiples of a power of two, so a row's bucket is
//     key >> shift, a single cheap operation where sampled boundaries need a
//     tree of comparisons. Such a bucket holds at most its width in rows,
//     since keys are unique, and the width is kept within a few times a
//     bucket's share of the rows (the planner's row estimate, or a walk's
//     count when a side has no statistics); sparser keys get sampled
//     buckets. Keys beyond the span, inserted since it was read, count in
//     the first or last bucket, whose ranges are open.
//  2. One scan per side assigns each row its bucket and returns (bucket,
//     count, sum) for up to MaxBuckets buckets. When every bucket agrees,
//     the table is consistent: that is one pass over each table, run in
//     parallel. The query leaves the server free to split the scan among
//     parallel workers, each aggregating its own part.
//  3. A bucket whose count or sum differs is split again from a keyset walk
//     over just that range, until a range holds at most LeafRows rows on
//     either side. Such a range is fetched from both sides as keys and
//     per-column hashes, and compared in Go, giving the exact keys and the
//     columns that differ.
//
// # Canonical form
//
// The source side is read through the mapping's SourceSelectList, so every
// column arrives in the target column's type, in the target's column order.
// Values compare by value: NULL differs from the empty string, a timestamp
// one microsecond off differs, 1.5 and 1.50 are one number, text compares
// byte for byte. On PostgreSQL 14 and later each column is hashed with its
// type's own extended hash function (the one hash partitioning relies on,
// stable across versions), which hashes numeric by value and timestamps to
// the microsecond.
//
// Columns of common built-in types (integers, text, varchar, numeric,
// timestamp, timestamptz, uuid) are hashed by a direct call, each with a
// seed of its own (its position) and NULL as a constant of its own, and the
// row hash is the XOR of these hashes; the other columns are hashed together
// by hash_record_extended over a row of them, one more term of the XOR.
// Building a row value per table row costs more than hashing the row, so
// the direct calls are the cheaper way. The distinct seeds keep a value
// swapped between two columns, or a NULL moved from one to another, from
// cancelling out: a difference goes unnoticed only when a 64-bit column
// hash collides, the odds hash_record_extended has too. The direct calls
// also close holes of the types' hash functions, which make deterministic
// collisions: bigint's folds the high half of the value onto the low half
// (1 and 4294967296 hash alike), so the high half picks the seed; numeric's
// ignores the sign (1.5 and -1.5 hash alike) and returns its seed as it is
// for NaN and both infinities, and the seed minus one for zero, so
// negative, other finite, infinite and NaN values each get a seed of their
// own. Those seeds, and the constants that stand for NULL, are scrambled
// 64-bit values: were they small numbers, a few of them would XOR to the
// same value (two NULLs hashed like two zeros). One hole is left open:
// timestamp and timestamptz hash through bigint's folding function, and
// SQL has no cheap way to their high half, so two timestamps whose halves
// XOR alike collide (a changed timestamp goes unnoticed with odds of 2^-32,
// not 2^-64); so do bigint and numeric values inside arrays, domains and
// the other types hashed by hash_record_extended.
// The row-by-row comparison of small ranges uses the same column hashes.
//
// A column
// whose type has no extended hash (json, point, ...) is hashed through its
// text form, and so is one whose type's hash makes different values as
// stored alike, itself or inside an array, domain, composite or range
// (issue 15): real and double precision (-0 and 0), interval ('1 mon' and
// '30 days'), enums (hashed as their label's OID, which differs between
// databases) and every base type of an extension (citext ignores case); and text-like columns are hashed under the "C" collation, so a
// case-insensitive (nondeterministic) collation does not make 'a' equal 'A'.
// Text keys are ordered by bytes when the two sides' collations differ, so
// a key falls in the same range on both sides. Older servers use md5 over the row's text form, with numeric
// values stripped of trailing fractional zeros first. Sessions run with
// TimeZone UTC, DateStyle ISO and extra_float_digits 3, so text forms are
// exact and the same on both sides.
//
// # Rows in flight
//
// While a sync runs, a difference may be a change not yet applied. With a
// recheck delay, every differing key is read again from both sides after the
// delay, and only the differences that persist are reported.
//
// A widening mapping (real to double precision, char(n) to text) compares
// the target with the source value converted by PostgreSQL's cast, the
// value backfill and the first copy write.
//
// # Repair
//
// Repair makes the target match the source for every differing key, in
// batched transactions, then verifies again. It is safe beside a running
// sync (issue 15): in one target transaction a batch first holds every row
// it will write (FOR UPDATE SKIP LOCKED on the rows the target has; an
// INSERT ... ON CONFLICT DO NOTHING of the row the source had for those it
// lacks), then reads the source's current rows, then writes them. A change
// the sync applied before the lock was on the source before the read; one
// it applies after waits for the lock. Rows the sync holds are tried again
// a few times, then left to it. Every lock wait is bounded below
// PostgreSQL's deadlock check.
//
// # Two-way
//
// With Options.TwoWay, each difference is classified by the last writer of
// the row on each side, the commit timestamp and replication origin of its
// xmin (track_commit_timestamp must be on): the sync writes into the target
// under origin datasync_NAME_to_target and into the source under
// datasync_NAME_to_source, so a row whose last writer is one of these is a
// copy of the other side's. A row only in the target that is not such a
// copy was written by the service: it is missing in the source, and repair
// copies it there instead of deleting it. Repair goes toward the side that
// wrote last, under the sync's origin of that direction, and leaves alone a
// row written again since it was classified.
package reconcile
