// Package backfill copies the rows of mapped tables from the source database
// to the target database in keyset-paginated batches: resumable, idempotent,
// parallel and throttled.
//
// Each table's key space is split into ranges (one per worker: integer keys
// by their min and max, other keys by quantiles of a sample). A range is
// copied a batch at a time, in key order, with a row-value comparison on the
// key — WHERE (a, b) > (last a, last b) ORDER BY a, b LIMIT n — never OFFSET.
// Every batch commits in one target transaction together with its
// checkpoint in datasync.backfill_progress, so a run killed at any moment
// resumes after the last committed batch without copying a row twice; a
// table whose ranges are all done is skipped.
//
// Batches stream as binary COPY from the source straight into the target's
// COPY FROM, without decoding the rows; only the last row's key is picked
// out of the stream for the checkpoint. A batch can only conflict with rows
// the target already had before the backfill (or that something else wrote
// since): the first such key is looked up per range, and from there on
// batches go through a staging table and INSERT … ON CONFLICT DO UPDATE,
// which leaves rows that are already equal untouched. A straight copy that
// still hits a unique violation is rolled back and redone as an upsert.
//
// Run is the entry point; datasync backfill and datasync sync both call it.
package backfill
