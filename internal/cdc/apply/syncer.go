package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/origins"
	"github.com/strangler-fig/strangler/internal/progress"
)

// Config configures a sync.
type Config struct {
	// Name names the sync: its slot and publication are datasync_NAME on
	// the source, its checkpoint is the row NAME of datasync.sync_state in
	// the target.
	Name string
	// Source and Target are the databases' URLs.
	Source, Target string
	// Tables are the table mappings, as configured.
	Tables []mapping.TableSpec
	// UntilCaughtUp makes Run return once everything committed on the
	// source before it started is applied.
	UntilCaughtUp bool
	// MaxLagBytes, when positive, logs a warning while the lag exceeds it.
	MaxLagBytes int64
	// MaxBatchChanges bounds the changes applied in one target transaction
	// when batching several source transactions; 2000 when zero. A larger
	// source transaction is still applied in one target transaction, of its
	// own.
	MaxBatchChanges int
	// MaxTxChanges is the most changes of one source transaction held in
	// memory at once (cdc.StreamConfig.MaxTxChanges); 10,000 when zero. A
	// larger source transaction is applied part by part, in one target
	// transaction.
	MaxTxChanges int
	// StatusInterval is how often the source hears the applied position;
	// 1s when zero.
	StatusInterval time.Duration
	// Logger receives progress; slog.Default() when nil.
	Logger *slog.Logger
	// Metrics, when not nil, are updated as changes are applied.
	Metrics *Metrics
	// TwoWay syncs both ways (issue 13): among other things, the sides'
	// sequence-backed keys are made disjoint before anything is written,
	// and the target's sequences are otherwise left alone (see
	// advanceSequences).
	TwoWay bool
	// Conflicts is two-way sync's conflict policy (see runTwoWay):
	// LastUpdateWins (the default), SourceWins or TargetWins.
	Conflicts string
	// CopyWorkers is the number of key ranges a table's first copy reads
	// at once, each on its own source connection importing the slot's
	// snapshot; 1 when zero.
	CopyWorkers int
	// CopyBatchSize is the number of rows per batch (and target
	// transaction) of the first copy; backfill.DefaultBatchSize when zero.
	CopyBatchSize int
	// Progress is the template of the first copy's progress reporter per
	// table (a bar on a terminal, JSON lines otherwise); a nil Out prints
	// nothing.
	Progress progress.Options
}

// ErrSlotLost is returned when the target has a checkpoint but the source
// no longer has the slot: the changes since are gone.
var ErrSlotLost = errors.New("replication slot lost")

// syncer is one run of a sync.
type syncer struct {
	cfg    Config
	log    *slog.Logger
	src    *pgxpool.Pool
	dst    *pgxpool.Pool
	tables []*mapping.Table
	// signature holds each table's tableSignature under the current mapping.
	signature map[*mapping.Table]string
	byName    map[string]*mapping.Table // source "schema.table" → mapping
	copied    map[*mapping.Table]cdc.LSN
	plans     map[uint32]*plan
	// unmapped holds the relations already warned about as not mapped.
	unmapped map[uint32]bool
	applied  cdc.LSN
	metrics  *Metrics
	// lagMeasured is when lag bytes were last read from the source.
	lagMeasured time.Time
	// lock makes this run the only one of its name.
	lock *runLock
	// checked is when the periodic checks (guard.go) last ran.
	checked time.Time
	// tw is set when the syncer is one direction of a two-way sync.
	tw *direction
}

// Run syncs the tables: it checks the mapping and the source (preflight),
// creates the publication and slot if missing, copies the tables not yet
// copied, then applies the change stream until ctx ends (then it returns nil
// after the transaction in hand) or, with UntilCaughtUp, until caught up.
//
// # Gap-free handoff
//
// The slot is created before any row is copied, exporting a snapshot of the
// database exactly as of the slot's consistent point: every transaction
// that committed before that point is in the snapshot, every one after it
// is streamed by the slot. Each table is copied by source connections that
// import this snapshot, after its target rows are deleted, in batches that
// commit one by one; the copy is recorded with the consistent point only
// once whole (see copy.go; a copy cut short is done again). Streaming then
// starts at the consistent point. Nothing is missed,
// nothing is applied twice, and a row deleted while the copy ran cannot
// come back: the copy does not see the deletion, but the stream delivers
// it after the copy. A table added to an existing sync is published first,
// then copied with the snapshot of a temporary slot created after that;
// the main stream skips its changes up to that slot's consistent point.
// A table whose mapping changed since its copy (columns, target, where
// filter) is handled the same way: its publication entry is replaced, then
// it is copied again, since the rows copied before lack what the new
// mapping adds and the stream alone would never bring it.
//
// Each target transaction applies one or more whole source transactions
// and stores the last one's end LSN in datasync.sync_state; a restart
// resumes from there and skips what it already applied, so each change
// takes effect exactly once. The source is told a position is flushed only
// once the target has committed it.
//
// # Large source transactions
//
// A source transaction with more than MaxTxChanges changes arrives in parts
// (see cdc.Transaction). It is applied in a target transaction of its own,
// opened with its first part and kept open while each part is sent as it
// arrives, and committed with the sync_state update only with its last part:
// the target never shows part of it, and the sync holds at most one part of
// it in memory. When the target fails in the middle, what was sent is lost
// with the target transaction, so the rest is not applied alone: the stream
// is closed and opened again from the applied position, and the server sends
// the whole transaction again. When ctx ends in the middle, the target
// transaction is rolled back and Run returns nil: nothing of it was
// acknowledged, and the next run gets it again from the server.
func Run(ctx context.Context, cfg Config) error {
	var err error
	if cfg.TwoWay {
		err = runTwoWay(ctx, cfg)
	} else {
		err = run(ctx, cfg, nil)
	}
	if err != nil && ctx.Err() != nil {
		// Stopped (SIGTERM) while starting: whatever was under way rolled
		// back, nothing was acknowledged.
		return nil
	}
	return err
}

func run(ctx context.Context, cfg Config, dir *direction) error {
	if !ValidName(cfg.Name) {
		return fmt.Errorf("sync: name %q: use lower-case letters, digits and _ (at most 54)", cfg.Name)
	}
	if cfg.MaxBatchChanges <= 0 {
		cfg.MaxBatchChanges = 2000
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	s := &syncer{cfg: cfg, log: cfg.Logger.With("sync", cfg.Name), metrics: cfg.Metrics,
		byName: map[string]*mapping.Table{}, copied: map[*mapping.Table]cdc.LSN{}, plans: map[uint32]*plan{}, unmapped: map[uint32]bool{}, tw: dir}
	var err error
	// One sync per name, checked before anything is created or dropped. A
	// direction of a two-way sync runs under the lock runTwoWay holds.
	if dir != nil {
		s.lock = dir.lock
	} else {
		if s.lock, err = acquireRunLock(ctx, cfg); err != nil {
			return err
		}
		defer s.lock.release()
	}
	if s.src, err = dbconn.Open(ctx, "source", cfg.Source, "datasync sync", nil); err != nil {
		return fmt.Errorf("connect source: %w", err)
	}
	defer s.src.Close()
	if s.dst, err = openTarget(ctx, cfg.Target, dir); err != nil {
		return fmt.Errorf("connect target: %w", err)
	}
	defer s.dst.Close()

	if s.tables, err = mapping.ResolveAll(ctx, s.src, s.dst, cfg.Tables); err != nil {
		return err
	}
	identity, err := Preflight(ctx, s.src, s.tables)
	if err != nil {
		return err
	}
	for _, t := range s.tables {
		s.byName[t.Source.String()] = t
		// Every table and operation starts at 0, so that increase() and
		// rate() see the first change too.
		for _, op := range []cdc.Op{cdc.OpInsert, cdc.OpUpdate, cdc.OpDelete, cdc.OpTruncate} {
			s.metrics.AppliedChanges.WithLabelValues(t.Target.String(), op.String())
		}
	}
	// The insert position, not pg_current_wal_lsn's write position: with
	// synchronous_commit off a commit can be ahead of what is written.
	var startWAL string
	if err := s.src.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&startWAL); err != nil {
		return fmt.Errorf("read source WAL position: %w", err)
	}
	caughtUpAt, err := cdc.ParseLSN(startWAL)
	if err != nil {
		return err
	}
	if err := s.lock.recordLease(ctx); err != nil {
		return err
	}
	if err := ensureStateSchema(ctx, s.dst); err != nil {
		return err
	}
	if dir == nil {
		// A two-way sync of this name switched back to one way.
		if err := dropTombstonesOf(ctx, s.src, s.dst, cfg.Name, s.log); err != nil {
			return err
		}
	}
	s.signature = map[*mapping.Table]string{}
	for _, t := range s.tables {
		s.signature[t] = tableSignature(t, identity[t])
	}
	if err := s.checkColumnsGone(ctx); err != nil {
		return err
	}
	remap, err := s.remapped(ctx)
	if err != nil {
		return err
	}
	left, err := s.leftPublication(ctx)
	if err != nil {
		return err
	}
	for t := range left {
		remap[t] = true
	}
	if err := ensurePublication(ctx, s.src, PublicationName(cfg.Name), s.tables, identity, remap); err != nil {
		return err
	}
	if err := s.forgetCopies(ctx, remap); err != nil {
		return err
	}
	if err := s.handoff(ctx); err != nil {
		return err
	}
	dir.handedOff()
	if err := s.stream(ctx, caughtUpAt); err != nil {
		return err
	}
	return s.advanceSequences(context.WithoutCancel(ctx), s.tables)
}

// handoff makes sure the slot exists and every table is copied.
func (s *syncer) handoff(ctx context.Context) error {
	slot := SlotName(s.cfg.Name)
	st, exists, err := s.slotAndState(ctx, slot)
	if err != nil {
		return err
	}
	switch {
	case !exists && st.exists:
		return fmt.Errorf("sync %s: the target has applied changes up to %s but the source has no slot %s: changes since are lost; run datasync cleanup --name %s, then sync again to copy afresh: %w",
			s.cfg.Name, st.applied, slot, s.cfg.Name, ErrSlotLost)
	case exists && !st.exists:
		if err := s.dropUnfinished(ctx, slot, "the slot of an unfinished first copy"); err != nil {
			return err
		}
		exists = false
	}
	if !exists {
		if _, err := s.dst.Exec(ctx, `DELETE FROM datasync.sync_tables WHERE name = $1`, s.cfg.Name); err != nil {
			return fmt.Errorf("reset copied tables: %w", err)
		}
		cp, err := s.copyWithSlot(ctx, slot, false, s.tables)
		if err != nil {
			return err
		}
		s.applied = cp
		return nil
	}
	s.applied = st.applied
	var missing []*mapping.Table
	for _, t := range s.tables {
		if lsn, ok := st.copied[t.Target.String()]; ok {
			s.copied[t] = lsn
		} else {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		// A temporary slot, gone with its connection; within the 63
		// characters of a slot name whatever the sync's name.
		tmp := fmt.Sprintf("datasync_copy_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
		if _, err := s.copyWithSlot(ctx, tmp, true, missing); err != nil {
			return err
		}
	}
	return nil
}

// slotAndState reads the syncer's checkpoint in its target and whether
// its slot exists in its source.
func (s *syncer) slotAndState(ctx context.Context, slot string) (state, bool, error) {
	st, err := loadState(ctx, s.dst, s.cfg.Name)
	if err != nil {
		return st, false, err
	}
	var exists bool
	if err := s.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil {
		return st, false, fmt.Errorf("look up slot %s: %w", slot, err)
	}
	return st, exists, nil
}

// dropUnfinished drops the slot of a first start that stopped before its
// copy finished, so that it starts over, unless a live process still uses
// the slot (the lock keeps other syncs of this name out; this guards
// against anything else). what names the slot in the log.
func (s *syncer) dropUnfinished(ctx context.Context, slot, what string) error {
	if pid, err := slotOwner(ctx, s.src, slot); err != nil {
		return err
	} else if pid != 0 {
		return fmt.Errorf("sync %s: slot %s has no finished copy in the target but is in use by server process %d there: stop that process first; nothing was dropped: %w",
			s.cfg.Name, slot, pid, ErrAlreadyRunning)
	}
	s.log.Info("dropping "+what, "slot", slot)
	if _, err := s.src.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		return fmt.Errorf("drop slot %s: %w", slot, err)
	}
	return nil
}

// tableSignature is what a table's copy depends on in the mapping: the
// published columns and row filter, the target table and the columns
// copied into it. It is stored with the copy; a different one on a later
// start means the mapping changed since.
func tableSignature(t *mapping.Table, identity []string) string {
	return strings.Join([]string{publicationTableSQL(t, identity), t.Target.Quoted(), t.TargetColumnList(), t.SourceSelectList()}, "\n")
}

// remapped returns the tables copied under a mapping other than the
// current one. Copies recorded before signatures were kept count as
// current.
func (s *syncer) remapped(ctx context.Context) (map[*mapping.Table]bool, error) {
	st, err := loadState(ctx, s.dst, s.cfg.Name)
	if err != nil {
		return nil, err
	}
	out := map[*mapping.Table]bool{}
	for _, t := range s.tables {
		if sig, ok := st.mapped[t.Target.String()]; ok && sig != s.signature[t] {
			s.log.Warn("the mapping of a copied table changed: publishing and copying it again",
				"source", t.Source.String(), "target", t.Target.String())
			out[t] = true
		}
	}
	return out, nil
}

// forgetCopies marks tables as not copied, so that the handoff copies them
// again. It runs after their publication entries are replaced: were it
// the other way round, a crash in between would copy them again under the
// old publication entry.
func (s *syncer) forgetCopies(ctx context.Context, tables map[*mapping.Table]bool) error {
	var names []string
	for t := range tables {
		names = append(names, t.Target.String())
	}
	if len(names) == 0 {
		return nil
	}
	if _, err := s.dst.Exec(ctx, `DELETE FROM datasync.sync_tables WHERE name = $1 AND target_table = ANY($2)`, s.cfg.Name, names); err != nil {
		return fmt.Errorf("mark remapped tables for a new copy: %w", err)
	}
	return nil
}

// copyWithSlot creates a slot exporting a snapshot and copies tables with
// it, keeping the slot's connection idle meanwhile so the snapshot stays
// valid. It returns the slot's consistent point.
func (s *syncer) copyWithSlot(ctx context.Context, slot string, temporary bool, tables []*mapping.Table) (cdc.LSN, error) {
	rc, err := cdc.Connect(ctx, s.cfg.Source)
	if err != nil {
		return 0, err
	}
	defer rc.Close(context.WithoutCancel(ctx))
	sl, err := rc.CreateSlot(ctx, slot, cdc.SlotOptions{ExportSnapshot: true, Temporary: temporary})
	if err != nil {
		return 0, err
	}
	if err := s.copyTables(ctx, sl.SnapshotName, sl.ConsistentPoint, tables); err != nil {
		return 0, err
	}
	return sl.ConsistentPoint, nil
}

// openStream starts the change stream after the applied position.
func (s *syncer) openStream(ctx context.Context) (*cdc.Stream, error) {
	st, err := cdc.OpenStream(ctx, cdc.StreamConfig{
		ConnString:     s.cfg.Source,
		Slot:           SlotName(s.cfg.Name),
		Publications:   []string{PublicationName(s.cfg.Name)},
		StartLSN:       s.applied,
		StatusInterval: s.cfg.StatusInterval,
		MaxTxChanges:   s.cfg.MaxTxChanges,
		Logger:         s.log,
		SkipOrigins:    s.skipOrigins(),
	})
	if err != nil {
		return nil, fmt.Errorf("start stream: %w", err)
	}
	return st, nil
}

// stream applies the change stream.
func (s *syncer) stream(ctx context.Context, caughtUpAt cdc.LSN) error {
	st, err := s.openStream(ctx)
	if err != nil {
		return err
	}
	// st is replaced when the stream restarts.
	defer func() { st.Close() }()
	s.log.Info("streaming", "from", s.applied.String())
	// held is a transaction taken from the stream and not applied yet.
	var held *cdc.Transaction
	for {
		if err := s.periodicChecks(ctx); err != nil {
			return err
		}
		if s.cfg.UntilCaughtUp && (st.Acked() >= caughtUpAt || st.Flushed() >= caughtUpAt) {
			s.log.Info("caught up", "applied", st.Acked().String(), "target", caughtUpAt.String())
			return nil
		}
		tx := held
		held = nil
		if tx == nil {
			wctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
			next, err := st.Next(wctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					s.log.Info("stopped", "applied", s.applied.String())
					return nil
				}
				if errors.Is(err, context.DeadlineExceeded) {
					s.observeIdle(st)
					s.retryParked(ctx)
					continue
				}
				return fmt.Errorf("stream: %w", err)
			}
			tx = next
		}
		if tx.Part != 0 {
			// Applied as a whole transaction, the end of one would pass
			// for all of it.
			return fmt.Errorf("stream: part %d of the transaction committed at %s without its start", tx.Part, tx.CommitLSN)
		}
		if tx.More {
			held, err = s.applyLong(ctx, st, tx)
			var restart *restartError
			switch {
			case errors.Is(err, errStopped):
				s.log.Info("stopped inside a large transaction; rolled back", "applied", s.applied.String())
				return nil
			case errors.As(err, &restart):
				if st, err = s.restart(ctx, st, restart.err); err != nil {
					if ctx.Err() != nil {
						s.log.Info("stopped", "applied", s.applied.String())
						return nil
					}
					return err
				}
			case err != nil:
				return err
			}
			continue
		}
		batch := []*cdc.Transaction{tx}
		n := len(tx.Changes)
		for n < s.cfg.MaxBatchChanges {
			more, ok := st.TryNext()
			if !ok {
				break
			}
			if more.More || more.Part != 0 {
				// The batch is applied before a large transaction opens
				// its own target transaction.
				held = more
				break
			}
			batch = append(batch, more)
			n += len(more.Changes)
		}
		// The transaction in hand is finished even when ctx ends.
		applied, applyErr := s.applyWithRetry(context.WithoutCancel(ctx), ctx, batch)
		if applied > s.applied {
			s.applied = applied
			st.Ack(applied)
		}
		s.observe(st, batch)
		if applyErr != nil {
			return applyErr
		}
		s.retryParked(ctx)
	}
}

// errStopped is returned by applyLong when ctx ended in the middle of a
// large transaction, which was then rolled back.
var errStopped = errors.New("stopped inside a transaction")

// restartError wraps a target failure in the middle of a large transaction:
// the parts sent are lost, and the transaction must come again from the
// server.
type restartError struct{ err error }

func (e *restartError) Error() string { return e.err.Error() }
func (e *restartError) Unwrap() error { return e.err }

// applyLong applies a source transaction delivered in parts, starting with
// part, in one target transaction that stays open across its parts. Each
// part is sent as it arrives; the last one also stores the end LSN in
// sync_state, and the target transaction commits.
//
// It returns a whole transaction it took from the stream but did not apply:
// when the stream reconnected and sent a small transaction where a Part 0
// was due. A failure of the target that may go away is returned as a
// *restartError, ctx ending as errStopped; both after rolling back.
func (s *syncer) applyLong(ctx context.Context, st *cdc.Stream, part *cdc.Transaction) (*cdc.Transaction, error) {
	var tx pgx.Tx
	defer func() {
		if tx != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = tx.Rollback(rctx)
		}
	}()
	// Parts of a transaction applied before this stream started: the
	// stream skips those already, this guards the same rule here.
	applied := part.CommitLSN < s.applied
	counts := map[[2]string]int{}
	changes, want := 0, 0
	for {
		if part.Part == 0 && want > 0 {
			// The stream reconnected and the server sends the transaction
			// again from its start: what was sent of it goes.
			s.log.Info("large transaction sent again from its start; starting over", "commit_lsn", part.CommitLSN.String())
			if tx != nil {
				err := tx.Rollback(ctx)
				tx = nil
				if err != nil {
					return nil, s.restartOn(ctx, fmt.Errorf("roll back a partly applied transaction: %w", err))
				}
			}
			applied = part.CommitLSN < s.applied
			clear(counts)
			changes, want = 0, 0
		}
		if part.Part != want {
			return nil, fmt.Errorf("stream: part %d of the transaction committed at %s where part %d was due", part.Part, part.CommitLSN, want)
		}
		if part.Part == 0 && !part.More {
			return part, nil
		}
		if want == 0 {
			s.log.Info("applying a large transaction in parts", "xid", part.Xid, "commit_lsn", part.CommitLSN.String())
		}
		want++
		changes += len(part.Changes)
		if !applied {
			if err := s.sendPart(ctx, &tx, part, counts); err != nil {
				return nil, err
			}
		}
		if !part.More {
			break
		}
		next, err := st.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, errStopped
			}
			return nil, fmt.Errorf("stream: %w", err)
		}
		part = next
	}
	if applied {
		return nil, nil
	}
	// Every part is sent: the transaction in hand is finished even when
	// ctx ends now.
	if err := s.storeConflicts(context.WithoutCancel(ctx), tx); err != nil {
		return nil, s.restartOn(context.WithoutCancel(ctx), err)
	}
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		tx = nil
		return nil, s.restartOn(context.WithoutCancel(ctx), fmt.Errorf("apply up to %s: commit: %w", part.EndLSN, err))
	}
	tx = nil
	s.reportConflicts()
	s.applied = part.EndLSN
	st.Ack(part.EndLSN)
	s.count(counts, 1)
	s.observe(st, []*cdc.Transaction{part})
	s.log.Info("applied a large transaction", "xid", part.Xid, "end_lsn", part.EndLSN.String(), "changes", changes, "parts", want)
	return nil, nil
}

// sendPart sends one part of a large transaction in the target transaction
// *tx, beginning it for the first part; with the last part, it also stores
// the end LSN.
func (s *syncer) sendPart(ctx context.Context, tx *pgx.Tx, part *cdc.Transaction, counts map[[2]string]int) error {
	if err := s.fillUnchanged(ctx, part); err != nil {
		return s.restartOn(ctx, err)
	}
	b := &pgx.Batch{}
	if err := s.queueTx(b, part, counts, nil); err != nil {
		return err
	}
	sendCtx := ctx
	if !part.More {
		commitTime := part.CommitTime
		b.Queue(upsertStateSQL, s.cfg.Name, part.EndLSN.String(), &commitTime)
		sendCtx = context.WithoutCancel(ctx)
	}
	if *tx == nil {
		s.beginApply()
		t, err := s.beginTx(ctx)
		if err != nil {
			return s.restartOn(ctx, fmt.Errorf("apply: begin: %w", err))
		}
		*tx = t
	}
	if s.parkingPart(part) {
		if err := s.applyEachPart(sendCtx, *tx, part, b); err != nil {
			return s.restartOn(sendCtx, fmt.Errorf("apply part %d of the transaction committed at %s: %w", part.Part, part.CommitLSN, err))
		}
	} else if err := (*tx).SendBatch(sendCtx, b).Close(); err != nil {
		err = fmt.Errorf("apply part %d of the transaction committed at %s: %w", part.Part, part.CommitLSN, err)
		if s.refused(err) {
			return s.parkFromStart(part, err)
		}
		return s.restartOn(sendCtx, err)
	}
	s.log.Debug("sent part of a large transaction", "xid", part.Xid, "part", part.Part, "changes", len(part.Changes))
	return nil
}

// restartOn classifies a target failure in the middle of a large
// transaction: errStopped when ctx ended, a *restartError when it may go
// away, else err.
func (s *syncer) restartOn(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return errStopped
	case targetRetryable(err):
		return &restartError{err: err}
	}
	return err
}

// restart closes st and opens the stream again from the applied position,
// with backoff while the target or the source cannot be reached, so that
// the server sends again the transaction the target lost. A commit whose
// answer was lost may have gone through: the target's checkpoint tells.
func (s *syncer) restart(ctx context.Context, st *cdc.Stream, cause error) (*cdc.Stream, error) {
	st.Close()
	backoff := 100 * time.Millisecond
	for {
		s.log.Warn("apply failed inside a large transaction; restarting the stream from the applied position",
			"error", cause, "applied", s.applied.String(), "in", backoff)
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		state, err := loadState(ctx, s.dst, s.cfg.Name)
		if err != nil {
			if !targetRetryable(err) {
				return st, err
			}
			cause = err
			continue
		}
		s.applied = max(s.applied, state.applied)
		next, err := s.openStream(ctx)
		if err != nil {
			if !cdc.Retryable(err) {
				return st, err
			}
			cause = err
			continue
		}
		return next, nil
	}
}

func (s *syncer) observeIdle(st *cdc.Stream) {
	s.metrics.LagSeconds.Set(0)
	s.observeLagBytes(st)
}

func (s *syncer) observe(st *cdc.Stream, batch []*cdc.Transaction) {
	last := batch[len(batch)-1]
	s.metrics.LagSeconds.Set(max(0, time.Since(last.CommitTime).Seconds()))
	s.observeLagBytes(st)
}

// observeLagBytes measures, at most once a second, how far the source's WAL
// is ahead of the position the slot may forget (applied, or flushed past
// what concerns no mapped table), and warns beyond MaxLagBytes.
func (s *syncer) observeLagBytes(st *cdc.Stream) {
	if time.Since(s.lagMeasured) < time.Second {
		return
	}
	s.lagMeasured = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var lag int64
	done := max(st.Acked(), st.Flushed())
	if err := s.src.QueryRow(ctx, `SELECT greatest(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn), 0)::bigint`,
		done.String()).Scan(&lag); err != nil {
		s.log.Debug("measure lag", "error", err)
		return
	}
	s.metrics.LagBytes.Set(float64(lag))
	if s.cfg.MaxLagBytes > 0 && lag > s.cfg.MaxLagBytes {
		s.log.Warn("sync lag exceeds --max-lag-bytes", "lag_bytes", lag, "max_lag_bytes", s.cfg.MaxLagBytes)
	}
}

// applyWithRetry applies a batch, retrying while the target is unreachable.
// It returns the end LSN of the last source transaction committed in the
// target. stop ends the retries (SIGTERM while the target is down).
func (s *syncer) applyWithRetry(ctx, stop context.Context, batch []*cdc.Transaction) (cdc.LSN, error) {
	backoff := 100 * time.Millisecond
	for {
		applied, err := s.apply(ctx, batch)
		if s.refused(err) {
			applied, err = s.applyParking(ctx, batch)
		}
		if err == nil || !targetRetryable(err) {
			return applied, err
		}
		s.log.Warn("apply failed; retrying", "error", err, "in", backoff)
		select {
		case <-stop.Done():
			return applied, nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		// A commit whose answer was lost may have gone through: the target's
		// checkpoint tells, and what it covers is not applied again.
		if st, err := loadState(ctx, s.dst, s.cfg.Name); err == nil && st.applied > applied {
			applied = st.applied
		}
		for len(batch) > 0 && batch[0].EndLSN <= max(applied, s.applied) {
			batch = batch[1:]
		}
		if len(batch) == 0 {
			return applied, nil
		}
	}
}

// targetRetryable reports whether an apply failure may go away by itself:
// a lost connection or a server shutting down or starting.
func targetRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "53300" || pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var drift *DriftError
	if errors.As(err, &drift) || errors.Is(err, cdc.ErrMalformed) || errors.Is(err, errNotMapped) {
		return false
	}
	return pgconn.SafeToRetry(err) || isNetError(err)
}

var errNotMapped = errors.New("change to a table that is not mapped")

// apply applies the transactions of batch not applied yet in one target
// transaction, with the checkpoint. When a transaction does not fit the
// mapping (schema drift), the ones before it are applied and the error is
// returned.
//
// A two-way batch is sent first with the fast statements, which apply a
// change only where it meets no conflict and finds its row where expected,
// at about the cost of one-way apply. When one of them does not apply its
// change, the target transaction is rolled back and the batch is applied
// again with the conflict-aware statements, which decide, record and count
// each conflict; so are the next few batches, conflicts tending to come
// together.
func (s *syncer) apply(ctx context.Context, batch []*cdc.Transaction) (cdc.LSN, error) {
	if s.tw == nil {
		return s.applyBatch(ctx, batch, nil)
	}
	if s.tw.slowBatches > 0 {
		s.tw.slowBatches--
		return s.applyBatch(ctx, batch, nil)
	}
	applied, err := s.applyBatch(ctx, batch, &fastBatch{})
	if !errors.Is(err, errFastMiss) {
		return applied, err
	}
	s.log.Debug("a change met a conflict or a missing row; applying the batch again with conflict detection",
		"from", batch[0].CommitLSN.String(), "transactions", len(batch))
	s.tw.slowBatches = slowBatchesAfterMiss
	return s.applyBatch(ctx, batch, nil)
}

// slowBatchesAfterMiss is how many batches after one whose fast statements
// missed are sent with the conflict-aware statements straight away.
const slowBatchesAfterMiss = 4

// applyBatch is apply with the fast statements (fast set) or without.
func (s *syncer) applyBatch(ctx context.Context, batch []*cdc.Transaction, fast *fastBatch) (cdc.LSN, error) {
	if err := s.fillUnchanged(ctx, batch...); err != nil {
		return s.applied, err
	}
	b := &pgx.Batch{}
	var last *cdc.Transaction
	var planErr error
	counts := map[[2]string]int{}
	for _, tx := range batch {
		if tx.EndLSN <= s.applied {
			continue
		}
		mark := b.Len()
		txCounts := map[[2]string]int{}
		if err := s.queueTx(b, tx, txCounts, fast); err != nil {
			b.QueuedQueries = b.QueuedQueries[:mark]
			planErr = err
			break
		}
		for k, v := range txCounts {
			counts[k] += v
		}
		last = tx
	}
	if last == nil {
		return s.applied, planErr
	}
	commitTime := last.CommitTime
	b.Queue(upsertStateSQL, s.cfg.Name, last.EndLSN.String(), &commitTime)
	s.beginApply()
	tx, err := s.beginTx(ctx)
	if err != nil {
		return s.applied, fmt.Errorf("apply: begin: %w", err)
	}
	defer tx.Rollback(ctx)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return s.applied, fmt.Errorf("apply up to %s: %w", last.EndLSN, err)
	}
	if fast != nil && fast.miss {
		return s.applied, errFastMiss
	}
	if err := s.storeConflicts(ctx, tx); err != nil {
		return s.applied, err
	}
	if err := tx.Commit(ctx); err != nil {
		return s.applied, fmt.Errorf("apply up to %s: commit: %w", last.EndLSN, err)
	}
	s.reportConflicts()
	n := 0
	for _, tx := range batch {
		if tx.EndLSN > s.applied && tx.EndLSN <= last.EndLSN {
			n++
		}
	}
	s.count(counts, n)
	return last.EndLSN, planErr
}

// beginTx begins a target transaction that applies changes. In a two-way
// sync the session runs under a replication origin, and PostgreSQL gives
// every transaction of such a session the commit time of its first one
// unless the origin's transaction time is reset: rows the sync applies
// would carry a commit time from when it started.
func (s *syncer) beginTx(ctx context.Context) (pgx.Tx, error) {
	tx, err := s.dst.Begin(ctx)
	if err != nil || s.tw == nil {
		return tx, err
	}
	if _, err := tx.Exec(ctx, origins.ResetTimeSQL); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	return tx, nil
}

// inTx runs fn in a transaction begun by beginTx, committed when fn
// returns nil.
func (s *syncer) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// count adds committed changes and transactions to the metrics.
func (s *syncer) count(changes map[[2]string]int, transactions int) {
	for k, v := range changes {
		s.metrics.AppliedChanges.WithLabelValues(k[0], k[1]).Add(float64(v))
	}
	s.metrics.Transactions.Add(float64(transactions))
}

// queueTx queues the statements of one source transaction, or of one part
// of one. A table's changes already in its copy are left out: those of
// transactions committed before the copy's LSN.
func (s *syncer) queueTx(b *pgx.Batch, tx *cdc.Transaction, counts map[[2]string]int, fast *fastBatch) error {
	for i := range tx.Changes {
		c := &tx.Changes[i]
		if c.Op == cdc.OpTruncate {
			var targets []string
			for _, rel := range c.Truncated {
				t := s.byName[rel.Namespace+"."+rel.Name]
				if t == nil || tx.CommitLSN < s.copied[t] {
					continue
				}
				targets = append(targets, t.Target.Quoted())
				counts[[2]string{t.Target.String(), "truncate"}]++
			}
			if len(targets) > 0 {
				b.Queue("TRUNCATE " + strings.Join(targets, ", "))
			}
			continue
		}
		// Changes already in a table's copy are skipped before the
		// relation is checked against the mapping: they were published
		// under the publication entry the copy replaced, whose columns
		// may differ from the current mapping's.
		if t := s.byName[c.Relation.Namespace+"."+c.Relation.Name]; t != nil && tx.CommitLSN < s.copied[t] {
			continue
		}
		p, err := s.plan(c.Relation)
		if errors.Is(err, errNotMapped) {
			// Still in the publication, no longer in the mapping.
			if !s.unmapped[c.Relation.ID] {
				s.unmapped[c.Relation.ID] = true
				s.log.Warn("skipping changes to a published table that is not mapped",
					"table", c.Relation.Namespace+"."+c.Relation.Name)
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := s.queueChange(b, p, tx, c, fast); err != nil {
			return err
		}
		counts[[2]string{p.table.Target.String(), c.Op.String()}]++
	}
	return nil
}

// plan returns the compiled plan for a relation, compiling it when the
// server described the relation anew.
func (s *syncer) plan(rel *cdc.Relation) (*plan, error) {
	if p, ok := s.plans[rel.ID]; ok && p.rel == rel {
		return p, nil
	}
	t := s.byName[rel.Namespace+"."+rel.Name]
	if t == nil {
		return nil, fmt.Errorf("relation %s.%s (oid %d): %w", rel.Namespace, rel.Name, rel.ID, errNotMapped)
	}
	p, err := compile(t, rel)
	if err != nil {
		return nil, err
	}
	s.plans[rel.ID] = p
	return p, nil
}
