package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/dbconn"
)

// ErrAlreadyRunning is wrapped by the error of a sync started while another
// one of the same name runs.
var ErrAlreadyRunning = errors.New("a sync of this name is already running")

// leaseSchema records which process runs each sync, so that a second one
// can be told who holds the name. The row is informative: what enforces
// one sync per name is the advisory lock held beside it.
const leaseSchema = `
CREATE SCHEMA IF NOT EXISTS datasync;
CREATE TABLE IF NOT EXISTS datasync.sync_leases (
	name text PRIMARY KEY,
	pid integer NOT NULL,
	host text NOT NULL,
	started_at timestamptz NOT NULL,
	backend_pid integer NOT NULL
);`

// lockPatience is about how long a run waits for the lock of a run that
// just ended to be released before it refuses to start.
const lockPatience = 2 * time.Second

// lockKeySQL derives the advisory lock key of a sync from its name. The
// prefix keeps it apart from keys the application may derive from the
// same names.
const lockKeySQL = `hashtextextended('datasync sync ' || $1, 0)`

// holderSQL describes the session holding a sync's advisory lock, by the
// application_name it connected with.
const holderSQL = `SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'), a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = ` + lockKeySQL + ` LIMIT 1`

// runLock makes a sync the only one of its name (issue 15, item 1: a second
// sync started during the first's initial copy dropped the first's slot,
// and the rows committed in between were never applied). It holds a
// session-level advisory lock, keyed by the name, on a dedicated
// connection to the target, where the sync's checkpoint lives, and one to
// the source, where its slot and publication live, for the whole run; and
// a lease row in the target naming the process.
type runLock struct {
	name    string
	cfg     Config
	target  *pgx.Conn
	source  *pgx.Conn
	started time.Time
	host    string
	leased  bool // the lease row was written
}

// acquireRunLock takes the sync's locks, before anything is created or
// dropped. When another process holds one, it fails with an error wrapping
// ErrAlreadyRunning that names that process.
func acquireRunLock(ctx context.Context, cfg Config) (*runLock, error) {
	host, _ := os.Hostname()
	l := &runLock{name: cfg.Name, cfg: cfg, started: time.Now(), host: host}
	var err error
	if l.target, err = l.lock(ctx, cfg.Target, "target"); err != nil {
		return nil, err
	}
	if l.source, err = l.lock(ctx, cfg.Source, "source"); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// recordLease writes the lease row. It runs once preflight has passed,
// since a refused sync creates nothing in the target; until then a second
// process names this one by its sessions' application_name.
func (l *runLock) recordLease(ctx context.Context) error {
	if _, err := l.target.Exec(ctx, leaseSchema); err != nil {
		return fmt.Errorf("create datasync.sync_leases in target: %w", err)
	}
	if _, err := l.target.Exec(ctx, `INSERT INTO datasync.sync_leases (name, pid, host, started_at, backend_pid)
		VALUES ($1, $2, $3, $4, pg_backend_pid())
		ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, started_at = EXCLUDED.started_at, backend_pid = EXCLUDED.backend_pid`,
		l.name, os.Getpid(), l.host, l.started); err != nil {
		return fmt.Errorf("record the sync's lease in target: %w", err)
	}
	l.leased = true
	return nil
}

// applicationName marks the lock's sessions, so that a second process can
// name the first from pg_stat_activity alone.
func (l *runLock) applicationName() string {
	s := fmt.Sprintf("datasync sync %s pid %d on %s", l.name, os.Getpid(), l.host)
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// lock connects to the database at url and takes the sync's advisory lock.
func (l *runLock) lock(ctx context.Context, url, side string) (*pgx.Conn, error) {
	pc, err := dbconn.PoolConfig(side, url, "")
	if err != nil {
		return nil, err
	}
	cc := pc.ConnConfig
	cc.RuntimeParams["application_name"] = l.applicationName()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, dbconn.Scrub(fmt.Errorf("connect %s: %w", side, err), cc.Password)
	}
	// The server releases a session's locks when its backend ends, a moment
	// after the client went away: a run started right after another one
	// stopped (or was killed) gives that a little time before refusing.
	var got bool
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKeySQL+`)`, l.name).Scan(&got); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("lock sync %s in %s: %w", l.name, side, err)
		}
		if got || wait > lockPatience {
			break
		}
		select {
		case <-ctx.Done():
			conn.Close(context.WithoutCancel(ctx))
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	if !got {
		who := l.holder(ctx, conn, side)
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("sync %s is already running (%s): stop it first, or give this sync another --name; nothing was created or dropped: %w",
			l.name, who, ErrAlreadyRunning)
	}
	return conn, nil
}

// holder describes who holds the sync's lock: the holder's lease row in
// the target, else the holding session's application_name.
func (l *runLock) holder(ctx context.Context, conn *pgx.Conn, side string) string {
	var backend int
	var app, addr string
	var since time.Time
	if err := conn.QueryRow(ctx, holderSQL, l.name).Scan(&backend, &app, &addr, &since); err != nil {
		return "held by a session of the " + side + " that could not be identified"
	}
	if side == "target" {
		var pid int
		var host string
		var started time.Time
		// The lease table may not exist yet, and a row of a process that
		// died is stale: only the lock holder's row counts.
		err := conn.QueryRow(ctx, `SELECT pid, host, started_at FROM datasync.sync_leases WHERE name = $1 AND backend_pid = $2`,
			l.name, backend).Scan(&pid, &host, &started)
		if err == nil {
			return fmt.Sprintf("pid %d on host %s, started %s", pid, host, started.UTC().Format(time.RFC3339))
		}
	}
	return fmt.Sprintf("%q, connected to the %s from %s since %s as backend %d", app, side, addr, since.UTC().Format(time.RFC3339), backend)
}

// runningHolder reports whether a sync called name runs, holding its lock
// in pool's database (side), and who it is.
func runningHolder(ctx context.Context, pool interface {
	Acquire(context.Context) (*pgxpool.Conn, error)
}, side, name string) (string, bool, error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return "", false, fmt.Errorf("connect %s: %w", side, err)
	}
	defer c.Release()
	var held bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (`+holderSQL+`)`, name).Scan(&held); err != nil {
		return "", false, fmt.Errorf("look for a running sync %s in the %s: %w", name, side, err)
	}
	if !held {
		return "", false, nil
	}
	return (&runLock{name: name}).holder(ctx, c.Conn(), side), true, nil
}

// check makes sure the locks are still held. A lock connection that was
// lost (a database restart) is replaced, taking the lock again; if another
// process took it meanwhile, the sync must stop. A database that cannot be
// reached yet is tried again at the next check.
func (l *runLock) check(ctx context.Context) error {
	for _, side := range []struct {
		conn **pgx.Conn
		url  string
		name string
	}{{&l.target, l.cfg.Target, "target"}, {&l.source, l.cfg.Source, "source"}} {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := (*side.conn).Ping(pctx)
		cancel()
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		(*side.conn).Close(context.WithoutCancel(ctx))
		conn, err := l.lock(ctx, side.url, side.name)
		if errors.Is(err, ErrAlreadyRunning) {
			return fmt.Errorf("lost the lock of sync %s in the %s and another process took it: %w", l.name, side.name, err)
		}
		if err != nil {
			l.cfg.Logger.Warn("the sync's lock connection was lost; taking the lock again at the next check", "side", side.name, "error", err)
			continue
		}
		*side.conn = conn
		if side.name == "target" && l.leased {
			if err := l.recordLease(ctx); err != nil {
				l.cfg.Logger.Warn("record the sync's lease again", "error", err)
			}
		}
	}
	return nil
}

// release removes the lease row and ends the lock sessions, which releases
// the locks.
func (l *runLock) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if l.leased && l.target != nil && !l.target.IsClosed() {
		_, _ = l.target.Exec(ctx, `DELETE FROM datasync.sync_leases WHERE name = $1 AND pid = $2 AND host = $3 AND started_at = $4`,
			l.name, os.Getpid(), l.host, l.started)
	}
	for _, c := range []*pgx.Conn{l.target, l.source} {
		if c != nil && !c.IsClosed() {
			// Unlocked here rather than when the backend notices the
			// closed connection, so that a run started right after finds
			// the name free.
			_, _ = c.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKeySQL+`)`, l.name)
			_ = c.Close(ctx)
		}
	}
}

// slotOwner returns the pid of the server process using a replication
// slot, 0 when none does.
func slotOwner(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, slot string) (int, error) {
	var pid *int
	err := q.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up slot %s: %w", slot, err)
	}
	if pid == nil {
		return 0, nil
	}
	return *pid, nil
}
