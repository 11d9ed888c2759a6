package backfill

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// errConflict means a batch copied straight in hit a key the target already
// had; the batch is rolled back and redone as an upsert.
var errConflict = errors.New("batch conflicts with rows already in the target")

// errTargetStopped ends the stream of a batch the target stopped reading.
var errTargetStopped = errors.New("target stopped reading the batch")

// streamBuffer is how much of a batch's COPY stream is gathered before it
// is handed to the target connection, so the target gets large CopyData
// messages instead of one per row.
const streamBuffer = 256 << 10

// rangeCopier copies the key ranges of one table, a range at a time, on a
// source and a target connection of its own.
type rangeCopier struct {
	r   *runner
	t   *mapping.Table
	src *pgxpool.Conn
	dst *pgxpool.Conn

	keyFields []int  // indexes of the key columns in the copied row
	upsert    string // upsertSQL of t
}

// batch is what one committed batch did.
type batch struct {
	rows int64
	last []string // last key copied, nil when no row was
	done bool     // the range is finished
}

// copySpan copies range s from its checkpoint to its end, checkpointing
// every batch.
func (c *rangeCopier) copySpan(ctx context.Context, s *span) error {
	// next is the first key after the checkpoint that the target already
	// holds (nil: none up to the range's end); the rows before it cannot
	// conflict, so they are copied straight in. From next on (the
	// conflict zone) batches are upserted and next is looked up again.
	var next []string
	probe, zone := true, false
	for !s.done {
		if probe {
			var err error
			if next, err = c.probe(ctx, s.lower(), s.end); err != nil {
				return err
			}
			probe, zone = false, false
		}
		var b batch
		var err error
		if zone {
			b, err = c.copyBatch(ctx, s, true, nil)
			probe = true
		} else {
			b, err = c.copyBatch(ctx, s, false, next)
			if errors.Is(err, errConflict) {
				// Someone wrote into the range since the probe.
				b, err = c.copyBatch(ctx, s, true, nil)
				probe = true
			} else if err == nil && next != nil && b.rows < int64(c.r.batchSize) {
				zone = true
			}
		}
		if err != nil {
			return err
		}
		if b.last != nil {
			s.last = b.last
		}
		s.rows += b.rows
		s.done = b.done
		c.r.batchDone(c.t, s, b)
		if err := c.r.bucket.take(ctx, b.rows); err != nil {
			return err
		}
	}
	return nil
}

// probe returns the first key the target holds after lower, up to upper.
func (c *rangeCopier) probe(ctx context.Context, lower, upper []string) ([]string, error) {
	rows, err := c.dst.Query(ctx, probeSQL(c.t, lower, upper))
	if err != nil {
		return nil, fmt.Errorf("look for rows already in %s: %w", c.t.Target, err)
	}
	defer rows.Close()
	var key []string
	if rows.Next() {
		key = make([]string, len(c.t.Key))
		ptrs := make([]any, len(key))
		for i := range key {
			ptrs[i] = &key[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("look for rows already in %s: %w", c.t.Target, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look for rows already in %s: %w", c.t.Target, err)
	}
	return key, nil
}

// copyBatch copies the next batch of range s — rows after its checkpoint,
// up to the range's end, or up to but excluding before when it is set — and records the checkpoint in the same target transaction.
// The rows stream from the source's COPY TO into the target's COPY FROM
// without being decoded. With upsert they go through a staging table and
// INSERT … ON CONFLICT instead of straight into the table.
func (c *rangeCopier) copyBatch(ctx context.Context, s *span, upsert bool, before []string) (batch, error) {
	limit := c.r.batchSize
	upper, inclusive := s.end, true
	if before != nil {
		upper, inclusive = before, false
	}
	tx, err := c.dst.Begin(ctx)
	if err != nil {
		return batch{}, fmt.Errorf("copy batch into %s: %w", c.t.Target, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	into := c.t.Target.Quoted()
	if upsert {
		if _, err := tx.Exec(ctx, stageSQL(c.t)); err != nil {
			return batch{}, fmt.Errorf("stage batch for %s: %w", c.t.Target, err)
		}
		into = stageTable
	}

	tracker, srcErr := c.stream(ctx, tx.Conn().PgConn(), sourceCopySQL(c.t, s.lower(), upper, inclusive, limit), targetCopySQL(c.t, into))
	dstErr := srcErr.target
	switch {
	case srcErr.source != nil:
		return batch{}, fmt.Errorf("read batch of %s from the source: %w", c.t.Source, srcErr.source)
	case dstErr != nil && !upsert && isUniqueViolation(dstErr):
		return batch{}, errConflict
	case dstErr != nil:
		return batch{}, fmt.Errorf("write batch into %s: %w", c.t.Target, dstErr)
	}

	if upsert && tracker.rows > 0 {
		if _, err := tx.Exec(ctx, c.upsert); err != nil {
			return batch{}, fmt.Errorf("upsert batch into %s: %w", c.t.Target, err)
		}
	}
	b := batch{rows: tracker.rows}
	// The range is finished when a batch bounded by the range's own end
	// comes back short.
	b.done = tracker.rows < int64(limit) && before == nil
	if b.rows > 0 || b.done {
		last, err := checkpoint(ctx, tx.Conn().PgConn(), c.r.name, c.t, s.id, b.rows, tracker.lastKey(), b.done)
		if err != nil {
			return batch{}, err
		}
		b.last = last
	}
	if err := tx.Commit(ctx); err != nil {
		return batch{}, fmt.Errorf("commit batch into %s: %w", c.t.Target, err)
	}
	return b, nil
}

// streamErrors are the outcomes of both ends of a stream.
type streamErrors struct {
	source, target error
}

// stream runs srcSQL (a COPY … TO STDOUT) on the source connection and
// feeds its output to dstSQL (a COPY … FROM STDIN) on dst, tracking the rows
// on the way. When the target fails first, the rest of the source's stream
// is read and dropped, which keeps the source connection usable.
func (c *rangeCopier) stream(ctx context.Context, dst *pgconn.PgConn, srcSQL, dstSQL string) (*rowTracker, streamErrors) {
	pr, pw := io.Pipe()
	buf := bufio.NewWriterSize(&pipeSink{w: pw}, streamBuffer)
	tracker := newRowTracker(buf, len(c.t.Columns), c.keyFields)
	srcDone := make(chan error, 1)
	go func() {
		_, err := c.src.Conn().PgConn().CopyTo(ctx, tracker, srcSQL)
		if err == nil {
			err = tracker.finish()
		}
		if err == nil {
			err = buf.Flush()
		}
		pw.CloseWithError(err) // nil: the target reads io.EOF
		srcDone <- err
	}()
	_, dstErr := dst.CopyFrom(ctx, pr, dstSQL)
	pr.CloseWithError(errTargetStopped)
	return tracker, streamErrors{source: <-srcDone, target: dstErr}
}

// pipeSink passes writes on to a pipe until the pipe's reader goes away,
// then swallows them.
type pipeSink struct {
	w      *io.PipeWriter
	broken bool
}

func (p *pipeSink) Write(b []byte) (int, error) {
	if !p.broken {
		if _, err := p.w.Write(b); err != nil {
			p.broken = true
		}
	}
	return len(b), nil
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
