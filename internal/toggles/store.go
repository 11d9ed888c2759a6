package toggles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strangler-fig/strangler/internal/atomicfile"
)

var (
	// ErrFlagNotFound is returned for a flag key the flags file does not
	// have.
	ErrFlagNotFound = errors.New("flag not found")
	// ErrFileInvalid is returned by Update when the flags file on disk was
	// edited into an invalid state: it must be fixed before a change can be
	// written over it.
	ErrFileInvalid = errors.New("the flags file on disk is invalid: fix it (or restore it) first")
	// ErrRevisionMismatch is returned by UpdateIf when the flags have
	// changed since the revision the caller read: read the flag again and
	// retry.
	ErrRevisionMismatch = errors.New("the flags changed since the revision given")
	// ErrStoreUnavailable is returned by a fleet store's writes while its
	// PostgreSQL database cannot be reached; the flags last read stay in
	// force.
	ErrStoreUnavailable = errors.New("the flags store (PostgreSQL) is unreachable")
)

// StoreOptions are a Store's hooks. Every field may be left zero.
type StoreOptions struct {
	// Logger receives the audit line of every change and reload errors.
	// Nil discards.
	Logger *slog.Logger
	// OnReload is called after every reload attempt of the watched file
	// that found new content: err is nil when the new content is in
	// force, else the old state was kept. The proxy counts these in
	// strangler_config_reloads_total.
	OnReload func(err error)
	// OnChange is called with the new snapshot after it is in force,
	// from a reload or an Update. Hooks run without the Store's lock held,
	// so they may call back into it.
	OnChange func(*Snapshot)
	// Audit is called after every Update is in force.
	Audit func(AuditEvent)
}

// AuditEvent describes one change made through Update.
type AuditEvent struct {
	Time  time.Time // when the change was in force
	Flag  string    // the flag's key
	Actor string    // who made it (the admin request's remote address by default)
	Old   Flag      // the flag before
	New   Flag      // the flag as now in force
}

// Patch is a change to one flag. Nil fields are left as they are.
type Patch struct {
	Percentage   *float64  `json:"percentage,omitempty"`    // 0..100, at most two decimals
	Enabled      *bool     `json:"enabled,omitempty"`       // false is the kill switch
	IncludeUsers *[]string `json:"include_users,omitempty"` // replaces the list
	ExcludeUsers *[]string `json:"exclude_users,omitempty"` // replaces the list
}

// Store holds the flags file's current snapshot. Reads (Snapshot) are lock
// free; Reload and Update are serialised.
type Store struct {
	path string
	opts StoreOptions
	log  *slog.Logger

	snap atomic.Pointer[Snapshot]

	mu      sync.Mutex // serialises loads and writes
	onDisk  []byte     // the bytes last loaded or written
	badDisk []byte     // the last content rejected, so it is reported once

	fleet *fleet // the PostgreSQL store in fleet mode; nil for a flags file
}

// OpenStore loads the flags file at path. A missing file is a file with no
// flags; an invalid one is an error.
func OpenStore(path string, opts StoreOptions) (*Store, error) {
	s := &Store{path: path, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := readFlagsFile(path)
	if err != nil {
		return nil, fmt.Errorf("open flags store: %w", err)
	}
	snap, err := snapshotOf(data)
	if err != nil {
		return nil, fmt.Errorf("open flags store %s: %w", path, err)
	}
	snap.revision = 1
	s.snap.Store(snap)
	s.onDisk = data
	return s, nil
}

// Path returns the flags file's path.
func (s *Store) Path() string { return s.path }

// Snapshot returns the snapshot in force.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// readFlagsFile reads the file; a missing file reads as empty.
func readFlagsFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read flags file: %w", err)
	}
	return data, nil
}

func snapshotOf(data []byte) (*Snapshot, error) {
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return NewSnapshot(f)
}

// Reload reads the flags file again. When its content changed and is
// valid, the new snapshot is put in force; when it is invalid the old one
// stays and the error is returned. changed reports whether a new snapshot
// was put in force.
func (s *Store) Reload() (changed bool, err error) {
	if s.fleet != nil {
		return s.fleet.reload()
	}
	s.mu.Lock()
	o := s.reloadLocked()
	s.mu.Unlock()
	s.notify(o)
	return o.snap != nil, o.err
}

// reloadOutcome is what a reload did, for the hooks that are called once
// the lock is released (so a hook may call back into the Store).
type reloadOutcome struct {
	snap   *Snapshot // the new snapshot in force, or nil
	err    error
	report bool // call OnReload with err: new content, or a new bad content
}

// notify runs the hooks for a reload outcome. Call it without s.mu held.
func (s *Store) notify(o reloadOutcome) {
	if o.report && s.opts.OnReload != nil {
		s.opts.OnReload(o.err)
	}
	if o.snap != nil && s.opts.OnChange != nil {
		s.opts.OnChange(o.snap)
	}
}

// reloadLocked adopts the file's content if it differs from what was last
// loaded or written. A bad content is reported once.
func (s *Store) reloadLocked() reloadOutcome {
	data, err := readFlagsFile(s.path)
	if err != nil {
		return reloadOutcome{err: fmt.Errorf("reload flags: %w", err)}
	}
	if bytes.Equal(data, s.onDisk) {
		return reloadOutcome{}
	}
	snap, err := snapshotOf(data)
	if err != nil {
		err = fmt.Errorf("reload flags %s (the previous flags stay in force): %w", s.path, err)
		o := reloadOutcome{err: err, report: !bytes.Equal(data, s.badDisk)}
		if o.report {
			s.badDisk = data
			s.log.Error("flags file rejected", "path", s.path, "err", err)
		}
		return o
	}
	snap.revision = s.snap.Load().revision + 1
	s.snap.Store(snap)
	s.onDisk, s.badDisk = data, nil
	s.log.Info("flags file reloaded", "path", s.path, "flags", len(snap.file.Flags))
	return reloadOutcome{snap: snap, report: true}
}

// Watch polls the flags file every interval and reloads it when its
// content changes, until ctx is done. A change is taken once two polls in a
// row read the same content, so a file caught half written (an editor that
// truncates, then writes) is not loaded. An invalid file is reported
// through OnReload and the logger, and the old state is kept.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if s.fleet != nil {
		s.fleet.run(ctx)
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("flags watcher panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	var seen []byte // content read by the previous poll
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.poll(&seen)
		}
	}
}

// poll is one look at the file by Watch: it reloads when the content read
// now is the content read by the previous poll (*seen) and differs from
// what is in force.
func (s *Store) poll(seen *[]byte) {
	data, err := readFlagsFile(s.path)
	if err != nil {
		s.log.Warn("flags file unreadable", "path", s.path, "err", err)
		return
	}
	settled := bytes.Equal(data, *seen)
	*seen = data
	if settled {
		_, _ = s.Reload() // errors are reported through OnReload
	}
}

// Update applies patch to the flag key, validates the whole file, writes
// it atomically (a temporary file in the same folder, fsync, rename, fsync
// of the folder) and puts it in force before returning the flag as now in
// force. actor names who made the change, for the audit line. A change
// made to the file on disk and not yet picked up by Watch is loaded first,
// so it is not overwritten.
func (s *Store) Update(key string, patch Patch, actor string) (Flag, error) {
	return s.UpdateIf(key, patch, actor, 0)
}

// UpdateIf is Update when the flags are still at revision ifRevision (as
// Snapshot.Revision reported it): otherwise nothing is changed and the
// error is ErrRevisionMismatch. ifRevision 0 means any revision. In fleet
// mode the check and the change are one transaction of the shared store.
func (s *Store) UpdateIf(key string, patch Patch, actor string, ifRevision int64) (Flag, error) {
	if s.fleet != nil {
		return s.fleet.update(key, patch, actor, ifRevision)
	}
	ev, snap, reloaded, err := s.update(key, patch, actor, ifRevision)
	s.notify(reloaded)
	if err != nil {
		return Flag{}, err
	}
	s.log.Info("flag changed", "flag", key, "actor", actor, "old", describeFlag(ev.Old), "new", describeFlag(ev.New))
	if s.opts.Audit != nil {
		s.opts.Audit(ev)
	}
	if s.opts.OnChange != nil {
		s.opts.OnChange(snap)
	}
	return ev.New.Clone(), nil
}

// update does Update's work under the lock; the hooks run after it.
func (s *Store) update(key string, patch Patch, actor string, ifRevision int64) (AuditEvent, *Snapshot, reloadOutcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reloaded := s.reloadLocked()
	if reloaded.err != nil {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w: %w", key, ErrFileInvalid, reloaded.err)
	}
	cur := s.snap.Load()
	old, ok := cur.file.Flags[key]
	if !ok {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w", key, ErrFlagNotFound)
	}
	if ifRevision != 0 && ifRevision != cur.revision {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w: %d, now %d", key, ErrRevisionMismatch, ifRevision, cur.revision)
	}
	next := old.Clone()
	patch.apply(&next)
	file := cur.file.Clone()
	file.Flags[key] = next
	snap, err := NewSnapshot(file) // validates the whole file
	if err != nil {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w", key, err)
	}
	var buf bytes.Buffer
	buf.WriteString("# Rollout flags. strangler-proxy rewrites this file when a flag is changed\n# through its admin API; comments are not kept.\n")
	if err := file.Encode(&buf); err != nil {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w", key, err)
	}
	if err := writeFileAtomic(s.path, buf.Bytes()); err != nil {
		return AuditEvent{}, nil, reloaded, fmt.Errorf("update flag %s: %w", key, err)
	}
	snap.revision = cur.revision + 1
	s.snap.Store(snap)
	s.onDisk = buf.Bytes()
	ev := AuditEvent{Time: time.Now(), Flag: key, Actor: actor, Old: old.Clone(), New: next.Clone()}
	return ev, snap, reloaded, nil
}

func (p Patch) apply(f *Flag) {
	if p.Percentage != nil {
		f.Percentage = *p.Percentage
	}
	if p.Enabled != nil {
		e := *p.Enabled
		f.Enabled = &e
	}
	if p.IncludeUsers != nil {
		f.IncludeUsers = slices.Clone(*p.IncludeUsers)
	}
	if p.ExcludeUsers != nil {
		f.ExcludeUsers = slices.Clone(*p.ExcludeUsers)
	}
}

// describeFlag is the short form of a flag in audit lines.
func describeFlag(f Flag) string {
	return fmt.Sprintf("enabled=%t percentage=%s include_users=%d exclude_users=%d",
		f.IsEnabled(), formatNumber(f.Percentage), len(f.IncludeUsers), len(f.ExcludeUsers))
}

// writeFileAtomic replaces path with data so that a reader (or a crash)
// sees either the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return fmt.Errorf("write flags file %s: %w", path, err)
	}
	return nil
}
