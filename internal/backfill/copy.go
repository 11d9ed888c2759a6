package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// errConflict means a batch copied straight in hit a key the target already
// had; the batch is rolled back and redone as an upsert.
var errConflict = errors.New("batch conflicts with rows already in the target")

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
	inTx      bool   // a target transaction is open on dst
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
	// conflict zone) a batch is upserted and next is looked up again.
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
		if zone {
			if _, err := c.copyBatches(ctx, s, true, nil); err != nil {
				return err
			}
			probe = true
			continue
		}
		short, err := c.copyBatches(ctx, s, false, next)
		switch {
		case errors.Is(err, errConflict):
			// Someone wrote into the range since the probe: redo the
			// batch from the checkpoint as an upsert.
			if _, err := c.copyBatches(ctx, s, true, nil); err != nil {
				return err
			}
			probe = true
		case err != nil:
			return err
		case short && next != nil:
			zone = true
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

// copyBatches copies batches of range s — rows after its checkpoint, up to
// the range's end, or up to but excluding before when it is set — each in a
// target transaction with its checkpoint. The source reads the next batch
// while the target writes the current one; the rows stream as binary COPY
// and are never decoded. It returns after the first batch that comes back
// short (short is then true) or, with upsert, after a single batch, which
// goes through a staging table and INSERT … ON CONFLICT instead of straight
// into the table. A straight batch that hits an existing key fails with
// errConflict, rolled back.
func (c *rangeCopier) copyBatches(ctx context.Context, s *span, upsert bool, before []string) (short bool, err error) {
	batches := make(chan *fetched, 1)
	stop := make(chan struct{})
	go c.fetch(ctx, s.lower(), s.end, before, upsert, batches, stop)
	defer func() {
		// Let the source finish the batch in hand, so its connection
		// stays usable, and drop what it read.
		close(stop)
		for f := range batches {
			f.discard()
		}
		// A transaction begun for a batch that never came.
		c.rollback(ctx)
	}()
	for f := range batches {
		b, err := c.commit(ctx, s, f, upsert, before)
		if err != nil {
			return false, err
		}
		if b.last != nil {
			s.last = b.last
		}
		s.rows += b.rows
		s.done = b.done
		c.r.batchDone(c.t, s, b)
		if err := c.r.bucket.take(ctx, b.rows); err != nil {
			return false, err
		}
		if b.rows < int64(c.r.batchSize) || upsert {
			return b.rows < int64(c.r.batchSize), nil
		}
	}
	return false, ctx.Err()
}

// commit writes a fetched batch into the target in one transaction with
// its checkpoint. The transaction is usually open already: the previous
// batch's commit began it.
func (c *rangeCopier) commit(ctx context.Context, s *span, f *fetched, upsert bool, before []string) (b batch, err error) {
	conn := c.dst.Conn().PgConn()
	if !c.inTx {
		if err := execSQL(ctx, conn, "BEGIN"); err != nil {
			f.discard()
			return batch{}, fmt.Errorf("copy batch into %s: %w", c.t.Target, err)
		}
		c.inTx = true
	}
	defer func() {
		if err != nil {
			c.rollback(ctx)
		}
	}()

	into := c.t.Target.Quoted()
	if upsert {
		if err := execSQL(ctx, conn, stageSQL(c.t)); err != nil {
			f.discard()
			return batch{}, fmt.Errorf("stage batch for %s: %w", c.t.Target, err)
		}
		into = stageTable
	}
	_, dstErr := conn.CopyFrom(ctx, f.reader(ctx), targetCopySQL(c.t, into))
	f.discard() // the rest, if the target stopped early; waits for the source
	switch {
	case f.err != nil:
		return batch{}, fmt.Errorf("read batch of %s from the source: %w", c.t.Source, f.err)
	case dstErr != nil && !upsert && isUniqueViolation(dstErr):
		return batch{}, errConflict
	case dstErr != nil:
		return batch{}, fmt.Errorf("write batch into %s: %w", c.t.Target, dstErr)
	}

	if upsert && f.rows > 0 {
		if err := execSQL(ctx, conn, c.upsert); err != nil {
			return batch{}, fmt.Errorf("upsert batch into %s: %w", c.t.Target, err)
		}
	}
	// The range is finished when a batch bounded by the range's own end
	// comes back short; the fetcher goes on only after a full batch.
	full := f.rows == int64(c.r.batchSize)
	b = batch{rows: f.rows, done: !full && before == nil}
	end := batchEnd{id: s.id, rows: b.rows, last: f.last, done: b.done,
		record: b.rows > 0 || b.done, beginNext: full && !upsert}
	last, err := commitBatch(ctx, conn, c.r.name, c.t, end)
	if err != nil {
		return batch{}, err
	}
	c.inTx = end.beginNext
	b.last = last
	return b, nil
}

// rollback ends the target transaction, if one is open.
func (c *rangeCopier) rollback(ctx context.Context) {
	c.inTx = false
	conn := c.dst.Conn().PgConn()
	if conn.IsClosed() || conn.TxStatus() == 'I' {
		return
	}
	if err := execSQL(context.WithoutCancel(ctx), conn, "ROLLBACK"); err != nil {
		// The pool drops a connection left in a transaction.
		c.r.log.Warn("rollback failed", "target", c.t.Target.String(), "error", err)
	}
}

// execSQL runs statements without parameters and drops their results.
func execSQL(ctx context.Context, conn *pgconn.PgConn, sql string) error {
	_, err := conn.Exec(ctx, sql).ReadAll()
	return err
}

// fetched is a batch on its way from the source: its COPY stream in
// chunks, then, once done is closed, what the source said about it.
type fetched struct {
	chunks chan []byte
	done   chan struct{}
	// Set before done is closed:
	rows int64
	last [][]byte // raw key fields of the last row
	err  error
}

// discard drops the chunks not read and waits for the source to finish.
func (f *fetched) discard() {
	for range f.chunks {
	}
	<-f.done
}

// reader reads the batch's stream; it ends with the source's error, if
// any.
func (f *fetched) reader(ctx context.Context) io.Reader { return &chunkReader{ctx: ctx, f: f} }

type chunkReader struct {
	ctx context.Context
	f   *fetched
	buf []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		select {
		case chunk, ok := <-r.f.chunks:
			if !ok {
				<-r.f.done
				if r.f.err != nil {
					return 0, r.f.err
				}
				return 0, io.EOF
			}
			r.buf = chunk
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// chunkWriter gathers a stream into chunks of streamBuffer bytes and sends
// them on.
type chunkWriter struct {
	ctx context.Context
	ch  chan<- []byte
	buf []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.buf == nil {
		w.buf = make([]byte, 0, streamBuffer)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= streamBuffer {
		return len(p), w.flush()
	}
	return len(p), nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	select {
	case w.ch <- w.buf:
		w.buf = nil
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// keyText turns a key's raw binary fields into their text forms, asking the
// source (its connection is free between two batches).
func (c *rangeCopier) keyText(ctx context.Context, raw [][]byte) ([]string, error) {
	exprs := make([]string, len(raw))
	formats := make([]int16, len(raw))
	for i, col := range c.t.KeyColumns() {
		exprs[i] = fmt.Sprintf("$%d::%s::text", i+1, col.TargetType)
		formats[i] = pgtype.BinaryFormatCode
	}
	rr := c.src.Conn().PgConn().ExecParams(ctx, "SELECT "+strings.Join(exprs, ", "), raw, make([]uint32, len(raw)), formats, nil)
	var key []string
	for rr.NextRow() {
		for _, v := range rr.Values() {
			key = append(key, string(v))
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, fmt.Errorf("print last key: %w", err)
	}
	if len(key) != len(raw) {
		return nil, fmt.Errorf("print last key: got %d fields, want %d", len(key), len(raw))
	}
	return key, nil
}

// fetch reads batches of keys after lower and up to end (inclusive), or up
// to before (exclusive) when it is set, from the source and sends them to
// out: one with single, else until a batch comes back short, a read fails
// or stop is closed. It runs at most one batch ahead of the target, and
// holds at most a few chunks of each batch in memory.
func (c *rangeCopier) fetch(ctx context.Context, lower, end, before []string, single bool, out chan<- *fetched, stop <-chan struct{}) {
	defer close(out)
	for {
		f := &fetched{chunks: make(chan []byte, 8), done: make(chan struct{})}
		select {
		case out <- f:
		case <-stop:
			return
		}
		upper, inclusive := end, true
		if before != nil {
			upper, inclusive = before, false
		}
		sql := sourceCopySQL(c.t, lower, upper, inclusive, c.r.batchSize)
		w := &chunkWriter{ctx: ctx, ch: f.chunks}
		tracker := newRowTracker(w, len(c.t.Columns), c.keyFields)
		_, err := c.src.Conn().PgConn().CopyTo(ctx, tracker, sql)
		if err == nil {
			err = tracker.finish()
		}
		if err == nil {
			err = w.flush()
		}
		var next []string
		if err == nil && tracker.rows == int64(c.r.batchSize) && !single {
			next, err = c.keyText(ctx, tracker.lastKey())
		}
		f.rows, f.last, f.err = tracker.rows, tracker.lastKey(), err
		close(f.chunks)
		close(f.done)
		if next == nil {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		lower = next
	}
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
