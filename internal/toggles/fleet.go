package toggles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/atomicfile"
)

// FleetOptions configure a flags store kept in PostgreSQL and shared by
// every replica of the proxy (fleet mode).
type FleetOptions struct {
	// URL is the PostgreSQL connection URL (postgres://...).
	URL string
	// CacheFile is where the last state read from the store is kept on
	// local disk, so a replica that starts while the store is unreachable
	// serves it. Empty means no cache.
	CacheFile string
	// Replica names this replica in the audit log and the replica list.
	// Empty means hostname-pid.
	Replica string
	// SeedFile is a flags file that seeds an empty store on first start.
	// Empty means an empty store starts with no flags.
	SeedFile string
	// PollInterval is how often the store is read and this replica's
	// entry in the replica list refreshed, besides LISTEN/NOTIFY. Zero
	// means 2s.
	PollInterval time.Duration
	// Timeout bounds connecting and each write. Zero means 5s.
	Timeout time.Duration
}

// Names in PostgreSQL. The schema is created on first start.
const (
	fleetSchema  = "strangler_flags"
	fleetChannel = "strangler_flags"
	// fleetSetupLock is the advisory lock key that serialises schema
	// creation among replicas starting at once.
	fleetSetupLock = 0x5374_7246_6c61_6773 // "StrFlags"
)

var fleetDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS strangler_flags`,
	`CREATE TABLE IF NOT EXISTS strangler_flags.document (
		id int PRIMARY KEY CHECK (id = 1),
		revision bigint NOT NULL,
		body text NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now())`,
	`CREATE TABLE IF NOT EXISTS strangler_flags.audit (
		id bigserial PRIMARY KEY,
		at timestamptz NOT NULL DEFAULT now(),
		revision bigint NOT NULL,
		flag text NOT NULL,
		actor text NOT NULL,
		replica text NOT NULL,
		old jsonb,
		new jsonb)`,
	`CREATE OR REPLACE FUNCTION strangler_flags.audit_append_only() RETURNS trigger
		LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'strangler_flags.audit is append-only'; END $$`,
	`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_append_only'
			AND tgrelid = 'strangler_flags.audit'::regclass) THEN
			CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON strangler_flags.audit
				FOR EACH ROW EXECUTE FUNCTION strangler_flags.audit_append_only();
		END IF;
	END $$`,
	`CREATE TABLE IF NOT EXISTS strangler_flags.ramp_state (
		id int PRIMARY KEY CHECK (id = 1),
		state jsonb NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS strangler_flags.replicas (
		id text PRIMARY KEY,
		revision bigint NOT NULL,
		started_at timestamptz NOT NULL,
		last_seen timestamptz NOT NULL)`,
	`INSERT INTO strangler_flags.ramp_state (id, state) VALUES (1, '{}') ON CONFLICT DO NOTHING`,
}

// fleet is the PostgreSQL side of a Store in fleet mode.
type fleet struct {
	s       *Store
	opts    FleetOptions
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig
	started time.Time
	seed    []byte // the seed file's content, validated; nil for none

	up      atomic.Bool
	ready   atomic.Bool // the schema exists (set up by this replica or seen)
	stale   atomic.Bool // serving the disk cache, not confirmed by the store
	upMu    sync.Mutex  // orders the up/down log lines
	fetchMu sync.Mutex  // one read of the store at a time
}

// OpenFleetStore opens the flags store in PostgreSQL: it creates the schema
// when missing, seeds an empty store from FleetOptions.SeedFile, and puts
// the store's flags in force. When PostgreSQL is unreachable it serves the
// flags cached in FleetOptions.CacheFile (and logs that they may be stale)
// until the store answers; with no cache it fails. Start Watch to follow
// the store.
func OpenFleetStore(ctx context.Context, fo FleetOptions, so StoreOptions) (*Store, error) {
	if fo.PollInterval <= 0 {
		fo.PollInterval = 2 * time.Second
	}
	if fo.Timeout <= 0 {
		fo.Timeout = 5 * time.Second
	}
	if fo.Replica == "" {
		fo.Replica = DefaultReplicaName()
	}
	s := &Store{opts: so, log: so.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	f := &fleet{s: s, opts: fo, started: time.Now()}
	s.fleet = f
	pcfg, err := pgxpool.ParseConfig(fo.URL)
	if err != nil {
		return nil, fmt.Errorf("open flags store: flags_store.postgres is not a PostgreSQL URL (postgres://user@host:5432/db): %w", err)
	}
	pcfg.ConnConfig.ConnectTimeout = fo.Timeout
	pcfg.MaxConns = 4
	f.connCfg = pcfg.ConnConfig.Copy()
	if fo.SeedFile != "" {
		data, err := readFlagsFile(fo.SeedFile)
		if err != nil {
			return nil, fmt.Errorf("open flags store: %w", err)
		}
		if _, err := snapshotOf(data); err != nil {
			return nil, fmt.Errorf("open flags store: seed file %s: %w", fo.SeedFile, err)
		}
		f.seed = data
	}
	f.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open flags store: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, fo.Timeout)
	defer cancel()
	err = f.setup(octx)
	if err == nil {
		// The hooks hear of the first snapshot from the caller, as with
		// OpenStore.
		var o reloadOutcome
		if o, err = f.read(octx); err == nil && s.snap.Load() == nil {
			f.pool.Close()
			return nil, fmt.Errorf("open flags store: %w", o.err)
		}
	}
	if err == nil {
		f.up.Store(true)
		return s, nil
	}
	// The store is unreachable: serve the local copy, if there is one.
	rev, body, savedAt, cerr := readFleetCache(fo.CacheFile)
	if cerr != nil {
		f.pool.Close()
		return nil, fmt.Errorf("open flags store: PostgreSQL is unreachable (%v) and there is no usable local copy of the flags (%v)", err, cerr)
	}
	snap, perr := snapshotOf(body)
	if perr != nil {
		f.pool.Close()
		return nil, fmt.Errorf("open flags store: PostgreSQL is unreachable (%v) and the local copy %s is invalid: %w", err, fo.CacheFile, perr)
	}
	snap.revision = rev
	s.snap.Store(snap)
	f.stale.Store(true)
	s.log.Warn("flags store unreachable at start: serving the local copy, which may be stale until the store answers",
		"cache_file", fo.CacheFile, "revision", rev, "saved_at", savedAt.UTC().Format(time.RFC3339), "err", err)
	return s, nil
}

// DefaultReplicaName is hostname-pid.
func DefaultReplicaName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "replica"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}

// setup creates the schema and seeds an empty store, once among replicas
// starting at once.
func (f *fleet) setup(ctx context.Context) error {
	if f.ready.Load() {
		return nil
	}
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(fleetSetupLock)); err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	for _, q := range fleetDDL {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create schema %s: %w", fleetSchema, err)
		}
	}
	body := f.seed
	if body == nil {
		body = []byte{}
	}
	tag, err := tx.Exec(ctx, `INSERT INTO strangler_flags.document (id, revision, body) VALUES (1, 1, $1) ON CONFLICT DO NOTHING`, string(body))
	if err != nil {
		return fmt.Errorf("seed flags store: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	if tag.RowsAffected() == 1 {
		if f.seed != nil {
			f.s.log.Info("flags store was empty: seeded from the flags file; from now on the store is the truth", "flags_file", f.opts.SeedFile)
		} else {
			f.s.log.Info("flags store created with no flags")
		}
	}
	f.ready.Store(true)
	return nil
}

// fetch reads the store's document when its revision is newer than the
// one in force and puts it in force. report says whether OnReload hears of
// it.
func (f *fleet) fetch(ctx context.Context, report bool) (bool, error) {
	o, err := f.read(ctx)
	if err != nil {
		return false, err
	}
	o.report = o.report && report
	f.s.notify(o)
	return o.snap != nil, o.err
}

// read is fetch without the hooks: it returns what they must hear.
func (f *fleet) read(ctx context.Context) (reloadOutcome, error) {
	f.fetchMu.Lock()
	defer f.fetchMu.Unlock()
	var cur int64
	if snap := f.s.snap.Load(); snap != nil && !f.stale.Load() {
		cur = snap.revision
	}
	var rev int64
	var body string
	err := f.pool.QueryRow(ctx, `SELECT revision, body FROM strangler_flags.document WHERE id = 1 AND revision > $1`, cur).Scan(&rev, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return reloadOutcome{}, nil
	}
	if err != nil {
		return reloadOutcome{}, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return f.adopt(rev, []byte(body), nil), nil
}

// adopt puts revision rev in force when it is newer than the one in force
// (or the one in force came from the disk cache), and writes the disk
// cache. snap, when not nil, is body already compiled.
func (f *fleet) adopt(rev int64, body []byte, snap *Snapshot) reloadOutcome {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	wasStale := f.stale.Load()
	if cur != nil && rev <= cur.revision && !wasStale {
		return reloadOutcome{}
	}
	if snap == nil {
		var err error
		snap, err = snapshotOf(body)
		if err != nil {
			err = fmt.Errorf("flags store revision %d is invalid (the previous flags stay in force): %w", rev, err)
			o := reloadOutcome{err: err, report: !bytes.Equal(body, s.badDisk)}
			if o.report {
				s.badDisk = body
				s.log.Error("flags store content rejected", "revision", rev, "err", err)
			}
			return o
		}
	}
	snap.revision = rev
	s.snap.Store(snap)
	s.badDisk = nil
	f.stale.Store(false)
	if wasStale {
		s.log.Info("flags store reachable: serving its flags again", "revision", rev)
	}
	if err := writeFleetCache(f.opts.CacheFile, rev, body); err != nil {
		s.log.Warn("could not write the local copy of the flags", "cache_file", f.opts.CacheFile, "err", err)
	}
	return reloadOutcome{snap: snap, report: true}
}

// reload is Store.Reload in fleet mode: a read of the store.
func (f *fleet) reload() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	defer cancel()
	if err := f.setup(ctx); err != nil {
		return false, err
	}
	return f.fetch(ctx, true)
}

// run follows the store until ctx is done: a LISTEN connection that reads
// the store on every notification, and a poll every PollInterval that
// also refreshes this replica's entry in the replica list.
func (f *fleet) run(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			f.s.log.Error("flags store follower panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() { f.listen(ctx) })
	f.poll(ctx)
	wg.Wait()
}

// poll reads the store every PollInterval and records this replica's
// entry, setting the store's up state.
func (f *fleet) poll(ctx context.Context) {
	t := time.NewTicker(f.opts.PollInterval)
	defer t.Stop()
	for {
		f.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *fleet) pollOnce(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	err := f.setup(pctx)
	if err == nil {
		_, err = f.fetch(pctx, true)
	}
	if err == nil || !errors.Is(err, ErrStoreUnavailable) {
		err = f.heartbeat(pctx)
	}
	if ctx.Err() != nil {
		return
	}
	f.setUp(err == nil, err)
}

// heartbeat records this replica, its revision and now in the replica list.
func (f *fleet) heartbeat(ctx context.Context) error {
	_, err := f.pool.Exec(ctx, `INSERT INTO strangler_flags.replicas (id, revision, started_at, last_seen)
		VALUES ($1, $2, $3, now())
		ON CONFLICT (id) DO UPDATE SET revision = EXCLUDED.revision, started_at = EXCLUDED.started_at, last_seen = now()`,
		f.opts.Replica, f.s.Snapshot().revision, f.started)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return nil
}

// setUp records whether the store answers and logs the changes.
func (f *fleet) setUp(up bool, err error) {
	f.upMu.Lock()
	defer f.upMu.Unlock()
	was := f.up.Swap(up)
	switch {
	case was && !up:
		f.s.log.Error("flags store unreachable: serving the last flags read; admin writes answer 503 until it is back",
			"revision", f.s.Snapshot().revision, "err", err)
	case !was && up:
		f.s.log.Info("flags store reachable", "revision", f.s.Snapshot().revision)
	}
}

// listen keeps a LISTEN connection open and reads the store on each
// notification; it reconnects after errors until ctx is done.
func (f *fleet) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := f.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		f.s.log.Debug("flags store listener reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second, f.opts.PollInterval)):
		}
	}
}

func (f *fleet) listenOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	conn, err := pgx.ConnectConfig(cctx, f.connCfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+fleetChannel); err != nil {
		return err
	}
	for {
		// Read once after each (re)connect too: notifications sent while
		// the listener was away are lost.
		fctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
		changed, err := f.fetch(fctx, true)
		if err == nil && changed {
			err = f.heartbeat(fctx)
		}
		cancel()
		if err != nil && errors.Is(err, ErrStoreUnavailable) {
			return err
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
	}
}

// update is Store.UpdateIf in fleet mode: one transaction that checks the
// revision, changes the flag, bumps the revision, appends to the audit log
// and notifies every replica.
func (f *fleet) update(key string, patch Patch, actor string, ifRevision int64) (Flag, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	defer cancel()
	if err := f.setup(ctx); err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w", key, err)
	}
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w: %w", key, ErrStoreUnavailable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var rev int64
	var body string
	if err := tx.QueryRow(ctx, `SELECT revision, body FROM strangler_flags.document WHERE id = 1 FOR UPDATE`).Scan(&rev, &body); err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w: %w", key, ErrStoreUnavailable, err)
	}
	if ifRevision != 0 && ifRevision != rev {
		return Flag{}, fmt.Errorf("update flag %s: %w: %d, now %d", key, ErrRevisionMismatch, ifRevision, rev)
	}
	file, err := Parse([]byte(body))
	if err != nil {
		return Flag{}, fmt.Errorf("update flag %s: the flags in the store (revision %d) are invalid: %w", key, rev, err)
	}
	old, ok := file.Flags[key]
	if !ok {
		return Flag{}, fmt.Errorf("update flag %s: %w", key, ErrFlagNotFound)
	}
	next := old.Clone()
	patch.apply(&next)
	file.Flags[key] = next
	snap, err := NewSnapshot(file) // validates the whole document
	if err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w", key, err)
	}
	var buf bytes.Buffer
	if err := file.Encode(&buf); err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w", key, err)
	}
	if flagEqual(old, next) {
		// Nothing changes: no new revision, no audit line, no
		// notification. Replicas setting the same value at once (a guard
		// trip seen by all) change the fleet once.
		_ = tx.Rollback(ctx)
		f.s.notify(f.adopt(rev, []byte(body), nil))
		return next.Clone(), nil
	}
	newRev := rev + 1
	oldJSON, _ := json.Marshal(ViewOf(key, old))
	newJSON, _ := json.Marshal(ViewOf(key, next))
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE strangler_flags.document SET revision = $1, body = $2, updated_at = now() WHERE id = 1`, newRev, buf.String())
	batch.Queue(`INSERT INTO strangler_flags.audit (revision, flag, actor, replica, old, new) VALUES ($1, $2, $3, $4, $5, $6)`,
		newRev, key, actor, f.opts.Replica, string(oldJSON), string(newJSON))
	batch.Queue(`SELECT pg_notify($1, $2)`, fleetChannel, strconv.FormatInt(newRev, 10))
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w: %w", key, ErrStoreUnavailable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Flag{}, fmt.Errorf("update flag %s: %w (the change may or may not be in force: read the flag again): %w", key, ErrStoreUnavailable, err)
	}
	now := time.Now()
	f.s.notify(f.adopt(newRev, buf.Bytes(), snap))
	ev := AuditEvent{Time: now, Flag: key, Actor: actor, Old: old.Clone(), New: next.Clone()}
	f.s.log.Info("flag changed", "flag", key, "actor", actor, "revision", newRev, "old", describeFlag(ev.Old), "new", describeFlag(ev.New))
	if f.s.opts.Audit != nil {
		f.s.opts.Audit(ev)
	}
	return next.Clone(), nil
}

// flagEqual reports whether a and b are the same flag.
func flagEqual(a, b Flag) bool {
	ja, err1 := json.Marshal(ViewOf("", a))
	jb, err2 := json.Marshal(ViewOf("", b))
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// Close releases a fleet store's connections; stop Watch first. It does
// nothing for a flags file.
func (s *Store) Close() {
	if s.fleet != nil {
		s.fleet.pool.Close()
	}
}

// fleetCache is the local copy of the store's flags.
type fleetCache struct {
	Revision int64     `json:"revision"`
	SavedAt  time.Time `json:"saved_at"`
	Flags    string    `json:"flags"` // the flags document, as in a flags file
}

func writeFleetCache(path string, rev int64, body []byte) error {
	if path == "" {
		return nil
	}
	data, err := json.MarshalIndent(fleetCache{Revision: rev, SavedAt: time.Now().UTC(), Flags: string(body)}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

func readFleetCache(path string) (rev int64, body []byte, savedAt time.Time, err error) {
	if path == "" {
		return 0, nil, time.Time{}, errors.New("no cache file is configured")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	var c fleetCache
	if err := json.Unmarshal(data, &c); err != nil {
		return 0, nil, time.Time{}, fmt.Errorf("read %s: %w", path, err)
	}
	return c.Revision, []byte(c.Flags), c.SavedAt, nil
}

// Fleet is what a Store in fleet mode tells about the shared store.
type Fleet struct{ f *fleet }

// Fleet returns the fleet side of the store; ok is false for a flags file.
func (s *Store) Fleet() (Fleet, bool) {
	if s.fleet == nil {
		return Fleet{}, false
	}
	return Fleet{s.fleet}, true
}

// Up reports whether the store answered the last read.
func (fl Fleet) Up() bool { return fl.f.up.Load() }

// Stale reports whether the flags in force come from the local copy and
// the store has not been read since start.
func (fl Fleet) Stale() bool { return fl.f.stale.Load() }

// Replica is this replica's name.
func (fl Fleet) Replica() string { return fl.f.opts.Replica }

// Replica is one entry of the replica list.
type Replica struct {
	ID       string    `json:"id"`
	Revision int64     `json:"revision"`
	LastSeen time.Time `json:"last_seen"`
	Started  time.Time `json:"started_at"`
}

// ReplicaWindow is how recent a replica's last contact must be for
// Replicas to list it.
const ReplicaWindow = time.Minute

// Replicas lists the replicas seen in the last minute, by id.
func (fl Fleet) Replicas(ctx context.Context) ([]Replica, error) {
	ctx, cancel := context.WithTimeout(ctx, fl.f.opts.Timeout)
	defer cancel()
	rows, err := fl.f.pool.Query(ctx, `SELECT id, revision, last_seen, started_at FROM strangler_flags.replicas
		WHERE last_seen > now() - $1::interval ORDER BY id`, ReplicaWindow.String())
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w: %w", ErrStoreUnavailable, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Replica, error) {
		var x Replica
		err := r.Scan(&x.ID, &x.Revision, &x.LastSeen, &x.Started)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w: %w", ErrStoreUnavailable, err)
	}
	return out, nil
}

// Heartbeat records this replica in the replica list now (the poll does
// it every PollInterval).
func (fl Fleet) Heartbeat(ctx context.Context) error { return fl.f.heartbeat(ctx) }

// ExportFlags returns the flags document in the store at url, as a flags
// file, with its revision. It changes nothing.
func ExportFlags(ctx context.Context, url string) (revision int64, flags []byte, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, nil, fmt.Errorf("export flags: %w: %w", ErrStoreUnavailable, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var body string
	err = conn.QueryRow(ctx, `SELECT revision, body FROM strangler_flags.document WHERE id = 1`).Scan(&revision, &body)
	if err != nil {
		return 0, nil, fmt.Errorf("export flags: the store has no flags yet (start a proxy on it, or run flags import): %w", err)
	}
	return revision, []byte(body), nil
}

// ImportFlags replaces the flags in the store at url with data, a flags
// file (validated first), as one new revision with an audit row for each
// flag that changes, and notifies every replica. The schema is created
// when missing. ifRevision, when not 0, refuses with ErrRevisionMismatch
// unless the store is at that revision.
func ImportFlags(ctx context.Context, url string, data []byte, actor string, ifRevision int64) (int64, error) {
	file, err := Parse(data)
	if err != nil {
		return 0, fmt.Errorf("import flags: %w", err)
	}
	if _, err := NewSnapshot(file); err != nil {
		return 0, fmt.Errorf("import flags: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return 0, fmt.Errorf("import flags: not a PostgreSQL URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return 0, fmt.Errorf("import flags: %w", err)
	}
	defer pool.Close()
	f := &fleet{s: &Store{log: slog.New(slog.DiscardHandler)}, pool: pool, opts: FleetOptions{Replica: DefaultReplicaName()}}
	if err := f.setup(ctx); err != nil {
		return 0, fmt.Errorf("import flags: %w", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("import flags: %w: %w", ErrStoreUnavailable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var rev int64
	var body string
	if err := tx.QueryRow(ctx, `SELECT revision, body FROM strangler_flags.document WHERE id = 1 FOR UPDATE`).Scan(&rev, &body); err != nil {
		return 0, fmt.Errorf("import flags: %w: %w", ErrStoreUnavailable, err)
	}
	if ifRevision != 0 && ifRevision != rev {
		return 0, fmt.Errorf("import flags: %w: %d, now %d", ErrRevisionMismatch, ifRevision, rev)
	}
	old, err := Parse([]byte(body))
	if err != nil {
		old = &File{}
	}
	newRev := rev + 1
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE strangler_flags.document SET revision = $1, body = $2, updated_at = now() WHERE id = 1`, newRev, string(data))
	keys := map[string]bool{}
	for k := range old.Flags {
		keys[k] = true
	}
	for k := range file.Flags {
		keys[k] = true
	}
	for k := range keys {
		o, hadOld := old.Flags[k]
		n, hasNew := file.Flags[k]
		if hadOld && hasNew && flagEqual(o, n) {
			continue
		}
		var oj, nj any
		if hadOld {
			b, _ := json.Marshal(ViewOf(k, o))
			oj = string(b)
		}
		if hasNew {
			b, _ := json.Marshal(ViewOf(k, n))
			nj = string(b)
		}
		batch.Queue(`INSERT INTO strangler_flags.audit (revision, flag, actor, replica, old, new) VALUES ($1, $2, $3, $4, $5, $6)`,
			newRev, k, actor, f.opts.Replica, oj, nj)
	}
	batch.Queue(`SELECT pg_notify($1, $2)`, fleetChannel, strconv.FormatInt(newRev, 10))
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return 0, fmt.Errorf("import flags: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("import flags: %w: %w", ErrStoreUnavailable, err)
	}
	return newRev, nil
}
