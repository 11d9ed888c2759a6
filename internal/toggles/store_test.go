package toggles

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestOpenStoreMissingFileHasNoFlags(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "flags.yaml"), StoreOptions{})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	if got := s.Snapshot().FlagKeys(); len(got) != 0 {
		t.Fatalf("flags: got %v, want none", got)
	}
}

func TestOpenStoreRejectsInvalidFile(t *testing.T) {
	_, err := OpenStore(writeFlags(t, "flags:\n  a: {percentage: 101}\n"), StoreOptions{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("OpenStore: got %v, want ErrInvalid", err)
	}
}

func TestUpdateSurvivesRestart(t *testing.T) {
	var events []AuditEvent
	s := openStore(t, designFlags, StoreOptions{Audit: func(e AuditEvent) { events = append(events, e) }})
	got, err := s.Update("users-migration", Patch{Percentage: ptr(60.5)}, "10.0.0.7:5555")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got.Percentage != 60.5 {
		t.Fatalf("returned percentage: got %v, want 60.5", got.Percentage)
	}
	if f, _ := s.Snapshot().Flag("users-migration"); f.Percentage != 60.5 {
		t.Fatalf("percentage in force after Update: got %v, want 60.5", f.Percentage)
	}
	if len(events) != 1 || events[0].Old.Percentage != 25 || events[0].New.Percentage != 60.5 || events[0].Actor != "10.0.0.7:5555" {
		t.Fatalf("audit events: got %+v, want one 25 -> 60.5 by 10.0.0.7:5555", events)
	}

	reopened, err := OpenStore(s.Path(), StoreOptions{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	f, _ := reopened.Snapshot().Flag("users-migration")
	if f.Percentage != 60.5 {
		t.Fatalf("percentage after reopen: got %v, want 60.5", f.Percentage)
	}
	// The rest of the flag and the segments survive the rewrite.
	if f.SegmentPercentages["employees"] != 100 || f.Guard == nil || f.Ramp == nil || len(f.IncludeUsers) != 1 {
		t.Fatalf("flag after reopen: got %+v, want segment percentages, guard, ramp and include_users kept", f)
	}
	if _, ok := reopened.Snapshot().File().Segments["beta"]; !ok {
		t.Fatalf("segments after reopen: got no beta, want it kept")
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(s.Path()), ".*.tmp"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: got %v, want none", leftovers)
	}
}

func TestUpdateErrors(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		patch Patch
		want  error
	}{
		{"unknown flag", "nope", Patch{Percentage: ptr(5.0)}, ErrFlagNotFound},
		{"out of range", "users-migration", Patch{Percentage: ptr(150.0)}, ErrInvalid},
		{"user in both lists", "users-migration", Patch{ExcludeUsers: &[]string{"u-qa-1"}}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, designFlags, StoreOptions{})
			before, _ := os.ReadFile(s.Path())
			_, err := s.Update(tt.key, tt.patch, "test")
			if !errors.Is(err, tt.want) {
				t.Fatalf("Update: got %v, want %v", err, tt.want)
			}
			after, _ := os.ReadFile(s.Path())
			if string(after) != string(before) {
				t.Fatalf("file after a refused Update: got changed, want untouched")
			}
			if f, _ := s.Snapshot().Flag("users-migration"); f.Percentage != 25 {
				t.Fatalf("percentage in force: got %v, want 25", f.Percentage)
			}
		})
	}
}

func TestUpdateKeepsAnUnseenEditOnDisk(t *testing.T) {
	s := openStore(t, "flags:\n  a: {percentage: 5}\n  b: {percentage: 5}\n", StoreOptions{})
	if err := os.WriteFile(s.Path(), []byte("flags:\n  a: {percentage: 5}\n  b: {percentage: 42}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update("a", Patch{Percentage: ptr(10.0)}, "test"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if f, _ := s.Snapshot().Flag("b"); f.Percentage != 42 {
		t.Fatalf("b after Update of a: got %v, want the edit on disk (42)", f.Percentage)
	}
}

// replaceFile replaces path's content at once, as a careful editor does.
func replaceFile(tb testing.TB, path, content string) {
	tb.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchReloadsAndKeepsOldStateOnInvalidFile(t *testing.T) {
	var mu sync.Mutex
	var reloads []error
	s := openStore(t, "flags:\n  a: {percentage: 5}\n", StoreOptions{OnReload: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reloads = append(reloads, err)
	}})
	nReloads := func() int { mu.Lock(); defer mu.Unlock(); return len(reloads) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Watch(ctx, 5*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })

	replaceFile(t, s.Path(), "flags:\n  a: {percentage: 7}\n")
	waitFor(t, "the valid edit", func() bool { f, _ := s.Snapshot().Flag("a"); return f.Percentage == 7 })
	waitFor(t, "the reload report", func() bool { return nReloads() == 1 })

	replaceFile(t, s.Path(), "flags:\n  a: {percentage: 700}\n")
	waitFor(t, "the rejection report", func() bool { return nReloads() == 2 })
	mu.Lock()
	err := reloads[1]
	mu.Unlock()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("reported error: got %v, want ErrInvalid", err)
	}
	if f, _ := s.Snapshot().Flag("a"); f.Percentage != 7 {
		t.Fatalf("percentage after an invalid edit: got %v, want the old 7", f.Percentage)
	}
}

func TestPollWaitsForSettledContentAndReportsABadFileOnce(t *testing.T) {
	var reports []error
	s := openStore(t, "flags:\n  a: {percentage: 5}\n", StoreOptions{OnReload: func(err error) { reports = append(reports, err) }})
	var seen []byte
	s.poll(&seen) // first look: the content in force
	replaceFile(t, s.Path(), "flags:\n  a: {percentage: 6}\n")
	s.poll(&seen)
	if f, _ := s.Snapshot().Flag("a"); f.Percentage != 5 {
		t.Fatalf("after one poll of new content: got %v, want the old 5 until it settles", f.Percentage)
	}
	s.poll(&seen)
	if f, _ := s.Snapshot().Flag("a"); f.Percentage != 6 {
		t.Fatalf("after the content settled: got %v, want 6", f.Percentage)
	}
	replaceFile(t, s.Path(), "flags:\n  a: {percentage: 600}\n")
	for range 5 {
		s.poll(&seen)
	}
	if len(reports) != 2 || reports[0] != nil || !errors.Is(reports[1], ErrInvalid) {
		t.Fatalf("reports: got %v, want [nil, one ErrInvalid] (a bad file is reported once)", reports)
	}
	if f, _ := s.Snapshot().Flag("a"); f.Percentage != 6 {
		t.Fatalf("after a bad file: got %v, want the old 6", f.Percentage)
	}
}

func TestConcurrentUpdatesAndReads(t *testing.T) {
	s := openStore(t, "flags:\n  a: {percentage: 0}\n  b: {percentage: 0}\n", StoreOptions{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			key := []string{"a", "b"}[i%2]
			for j := range 10 {
				if _, err := s.Update(key, Patch{Percentage: ptr(float64(i*10 + j))}, "test"); err != nil {
					t.Errorf("Update: %v", err)
				}
				s.Snapshot().Evaluate(key, "u-1", nil)
			}
		})
	}
	wg.Wait()
	reopened, err := OpenStore(s.Path(), StoreOptions{})
	if err != nil {
		t.Fatalf("reopen after concurrent updates: %v", err)
	}
	for _, key := range []string{"a", "b"} {
		got, _ := reopened.Snapshot().Flag(key)
		want, _ := s.Snapshot().Flag(key)
		if got.Percentage != want.Percentage {
			t.Fatalf("flag %s on disk: got %v, want the %v in force", key, got.Percentage, want.Percentage)
		}
	}
}

func TestHooksMayCallBackIntoTheStore(t *testing.T) {
	var s *Store
	var seen []float64
	s = openStore(t, "flags:\n  a: {percentage: 5}\n", StoreOptions{
		OnChange: func(snap *Snapshot) {
			// A hook that reads and reloads must not deadlock.
			if _, err := s.Reload(); err != nil {
				t.Errorf("Reload from OnChange: %v", err)
			}
			f, _ := s.Snapshot().Flag("a")
			seen = append(seen, f.Percentage)
		},
		Audit: func(AuditEvent) { s.Snapshot() },
	})
	done := make(chan error, 1)
	go func() { _, err := s.Update("a", Patch{Percentage: ptr(9.0)}, "test"); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Update with hooks calling back into the store: got a deadlock, want it to return")
	}
	if len(seen) != 1 || seen[0] != 9 {
		t.Fatalf("OnChange saw: got %v, want [9]", seen)
	}
}

func TestPollOfARemovedFileMeansNoFlags(t *testing.T) {
	s := openStore(t, "flags:\n  a: {percentage: 5}\n", StoreOptions{})
	var seen []byte
	s.poll(&seen)
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	s.poll(&seen)
	if !s.Snapshot().Has("a") {
		t.Fatalf("after one poll of a missing file: got no flag a, want it kept until the removal settles")
	}
	s.poll(&seen)
	if s.Snapshot().Has("a") {
		t.Fatalf("after the removal settled: got flag a, want no flags (DESIGN.md: missing = no flags)")
	}
}
