package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/progress"
)

// Defaults of Options.
const (
	DefaultBatchSize = 10000
	DefaultName      = "backfill"
)

// Errors callers may test for.
var (
	// ErrOptions is wrapped by errors about invalid Options.
	ErrOptions = errors.New("invalid backfill options")
	// ErrBusy means another backfill of the same name is copying the same
	// target table right now.
	ErrBusy = errors.New("another backfill is copying this table")
)

// Options configure Run.
type Options struct {
	// Source and Target are the databases; both are required. The source
	// pool needs room for Workers connections, the target pool for
	// Workers+1 (one holds the table's lock).
	Source *pgxpool.Pool
	Target *pgxpool.Pool
	// Name keeps apart the checkpoints of independent backfills of the same
	// target table (sync passes its own name); "" means DefaultName.
	Name string
	// BatchSize is the number of rows per batch and transaction; 0 means
	// DefaultBatchSize.
	BatchSize int
	// Workers is the number of key ranges copied at once; 0 means 1. A
	// table resumed from checkpoints keeps the ranges it was split into.
	Workers int
	// MaxRowsPerSecond caps the copy rate over all workers; 0 means no cap.
	MaxRowsPerSecond float64
	// Restart forgets the tables' checkpoints and copies everything again
	// (rows already equal in the target are left untouched).
	Restart bool
	// Snapshot, when set, is an exported snapshot (pg_export_snapshot or a
	// replication slot's consistent point): every source read runs in a
	// REPEATABLE READ transaction that imports it, so the copy shows the
	// source exactly as of that snapshot. Whoever exported it must keep it
	// alive until Run returns.
	Snapshot string
	// Progress is the template of each table's progress reporter (Label,
	// Total and Initial are set per table); a nil Out prints nothing.
	Progress progress.Options
	// Logger receives what the backfill does; nil means no logging.
	Logger *slog.Logger
	// OnBatch, if set, is called after each committed batch, from the
	// worker that copied it.
	OnBatch func(BatchEvent)
	// KeepSequences leaves the target's sequences as they are. Otherwise
	// each table's identity, serial and nextval sequences are advanced past
	// the copied keys once the table is done (see AdvanceSequences). Two-way
	// sync sets it: there a disjoint-range scheme owns the sequences.
	KeepSequences bool
}

// BatchEvent describes a committed batch.
type BatchEvent struct {
	// Table is the target table.
	Table mapping.Ident
	// Range is the key range's id.
	Range int
	// Rows is the number of rows in the batch.
	Rows int64
	// RangeDone reports whether the batch finished its range.
	RangeDone bool
}

// TableResult is what Run did to one table.
type TableResult struct {
	Source, Target mapping.Ident
	// Rows counts the rows copied by this run.
	Rows int64
	// TotalRows counts the rows copied by this run and by the runs it
	// resumed.
	TotalRows int64
	// Seconds is the time spent on the table.
	Seconds float64
	// Ranges is the number of key ranges.
	Ranges int
	// Resumed reports that earlier runs had copied part of the table.
	Resumed bool
	// Skipped reports that earlier runs had copied the whole table, so
	// nothing was done (Options.Restart copies it again).
	Skipped bool
	// Sequences are the target sequences advanced past the copied keys.
	Sequences []SequenceAdvance
}

// Summary is what Run did.
type Summary struct {
	Tables        []TableResult
	Rows          int64
	Seconds       float64
	RowsPerSecond float64
}

// runner is one Run.
type runner struct {
	opts      Options
	name      string
	batchSize int
	workers   int
	log       *slog.Logger
	bucket    *bucket

	mu  sync.Mutex // guards rep
	rep *progress.Reporter
}

// Run copies every table, one after the other, and returns what it did,
// also when it fails part way (the tables before the failure are in the
// summary). The tables must come from mapping.ResolveAll, so the preflight
// has passed. Run creates the checkpoint table datasync.backfill_progress in
// the target if it is missing.
func Run(ctx context.Context, opts Options, tables []*mapping.Table) (sum Summary, err error) {
	r, err := newRunner(opts)
	if err != nil {
		return Summary{}, err
	}
	start := time.Now()
	defer func() {
		sum.Seconds = time.Since(start).Seconds()
		if sum.Seconds > 0 {
			sum.RowsPerSecond = float64(sum.Rows) / sum.Seconds
		}
	}()
	if err := ensureCheckpoints(ctx, opts.Target); err != nil {
		return sum, err
	}
	for _, t := range tables {
		res, err := r.table(ctx, t)
		if err == nil && !opts.KeepSequences {
			res.Sequences, err = AdvanceSequences(ctx, opts.Target, []*mapping.Table{t})
			for _, a := range res.Sequences {
				r.log.Info("advanced sequence past the copied keys", "target", a.Table.String(), "column", a.Column,
					"sequence", a.Sequence, "next_value_was", a.From, "next_value", a.To)
			}
		}
		sum.Tables = append(sum.Tables, res)
		sum.Rows += res.Rows
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func newRunner(opts Options) (*runner, error) {
	var problems []error
	if opts.Source == nil || opts.Target == nil {
		problems = append(problems, errors.New("both the source and the target pool are required"))
	}
	if opts.BatchSize < 0 {
		problems = append(problems, fmt.Errorf("batch size %d: want 1 or more", opts.BatchSize))
	}
	if opts.Workers < 0 {
		problems = append(problems, fmt.Errorf("workers %d: want 1 or more", opts.Workers))
	}
	if opts.MaxRowsPerSecond < 0 {
		problems = append(problems, fmt.Errorf("max rows per second %g: want 0 (no cap) or more", opts.MaxRowsPerSecond))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrOptions, errors.Join(problems...))
	}
	r := &runner{opts: opts, name: opts.Name, batchSize: opts.BatchSize, workers: max(opts.Workers, 1), log: opts.Logger}
	if r.name == "" {
		r.name = DefaultName
	}
	if r.batchSize == 0 {
		r.batchSize = DefaultBatchSize
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if rate := opts.MaxRowsPerSecond; rate > 0 {
		// A batch larger than a second's worth of rows would make the
		// rate a series of bursts.
		r.batchSize = max(1, min(r.batchSize, int(rate)))
		r.bucket = newBucket(rate, r.batchSize, time.Now)
	}
	return r, nil
}

// table copies one table.
func (r *runner) table(ctx context.Context, t *mapping.Table) (res TableResult, err error) {
	res = TableResult{Source: t.Source, Target: t.Target}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	log := r.log.With("source", t.Source.String(), "target", t.Target.String())

	unlock, err := r.lockTable(ctx, t)
	if err != nil {
		return res, err
	}
	defer unlock()
	if r.opts.Restart {
		if err := deleteSpans(ctx, r.opts.Target, r.name, t); err != nil {
			return res, err
		}
	}
	spans, err := loadSpans(ctx, r.opts.Target, r.name, t)
	if err != nil {
		return res, err
	}
	var todo []*span
	for _, s := range spans {
		res.TotalRows += s.rows
		if !s.done {
			todo = append(todo, s)
		}
	}
	switch {
	case len(spans) > 0 && len(todo) == 0:
		res.Ranges, res.Skipped = len(spans), true
		log.Info("already backfilled: skipped", "rows", res.TotalRows)
		return res, nil
	case len(spans) > 0:
		res.Resumed = true
		log.Info("resuming from checkpoints", "ranges", len(spans), "ranges_left", len(todo), "rows_done", res.TotalRows)
	default:
		if spans, err = planSpans(ctx, r.opts.Source, t, r.workers); err != nil {
			return res, err
		}
		if err := saveSpans(ctx, r.opts.Target, r.name, t, spans); err != nil {
			return res, err
		}
		todo = spans
		log.Info("starting", "ranges", len(spans))
	}
	res.Ranges = len(spans)

	total, err := estimateRows(ctx, r.opts.Source, t)
	if err != nil {
		return res, err
	}
	popts := r.opts.Progress
	popts.Label, popts.Total, popts.Initial = t.Target.String(), total, res.TotalRows
	rep := progress.New(popts)
	rep.Start()
	r.mu.Lock()
	r.rep = rep
	r.mu.Unlock()

	err = r.copySpans(ctx, t, todo)
	done := rep.Finish()
	res.Rows = done.Rows
	res.TotalRows += done.Rows
	if err != nil {
		return res, err
	}
	log.Info("done", "rows", res.Rows, "seconds", done.Seconds)
	return res, nil
}

// lockTable takes a session advisory lock in the target on the table's
// checkpoints, so that two runs never copy the same table at once; the lock
// goes with the session if the process dies.
func (r *runner) lockTable(ctx context.Context, t *mapping.Table) (unlock func(), err error) {
	conn, err := r.opts.Target.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", t.Target, err)
	}
	key := "datasync backfill " + r.name + " " + t.Target.String()
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext($1))", key).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("lock %s: %w", t.Target, err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("%s: %w (name %q): wait for it to finish", t.Target, ErrBusy, r.name)
	}
	return func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext($1))", key); err != nil {
			// A pooled session must not keep the lock: drop it.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}, nil
}

// copySpans copies the ranges with up to r.workers at once. The first error
// stops the others.
func (r *runner) copySpans(ctx context.Context, t *mapping.Table, spans []*span) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan *span, len(spans))
	for _, s := range spans {
		queue <- s
	}
	close(queue)
	var wg sync.WaitGroup
	for range min(r.workers, len(spans)) {
		wg.Go(func() {
			for s := range queue {
				if err := r.copySpan(ctx, t, s); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}

// copySpan copies one range on connections of its own.
func (r *runner) copySpan(ctx context.Context, t *mapping.Table, s *span) error {
	src, err := r.opts.Source.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to the source: %w", err)
	}
	defer src.Release()
	dst, err := r.opts.Target.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to the target: %w", err)
	}
	defer dst.Release()

	if r.opts.Snapshot != "" {
		if _, err := src.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT "+
			mapping.QuoteLiteral(r.opts.Snapshot)); err != nil {
			return fmt.Errorf("import snapshot %s: %w", r.opts.Snapshot, err)
		}
		defer src.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
	keyFields := make([]int, len(t.Key))
	copy(keyFields, t.Key)
	c := &rangeCopier{r: r, t: t, src: src, dst: dst, keyFields: keyFields, upsert: upsertSQL(t)}
	if err := c.copySpan(ctx, s); err != nil {
		return fmt.Errorf("range %d of %s: %w", s.id, t.Target, err)
	}
	return nil
}

// batchDone reports a committed batch.
func (r *runner) batchDone(t *mapping.Table, s *span, b batch) {
	r.mu.Lock()
	rep := r.rep
	r.mu.Unlock()
	rep.Add(b.rows)
	if r.opts.OnBatch != nil {
		r.opts.OnBatch(BatchEvent{Table: t.Target, Range: s.id, Rows: b.rows, RangeDone: b.done})
	}
}
