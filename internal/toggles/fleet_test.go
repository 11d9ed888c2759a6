package toggles

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openFleet(t *testing.T, fo FleetOptions) *Store {
	t.Helper()
	s, err := OpenFleetStore(context.Background(), fo, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestFleetStoreSeedsOnceThenIsTheTruth: an empty store takes the flags
// file's flags on first start; a later start with another file keeps the
// store's flags.
func TestFleetStoreSeedsOnceThenIsTheTruth(t *testing.T) {
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	seed := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(seed, []byte("flags:\n  a: {percentage: 10}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s1 := openFleet(t, FleetOptions{URL: db.URL, SeedFile: seed, Replica: "one"})
	if f, ok := s1.Snapshot().Flag("a"); !ok || f.Percentage != 10 || s1.Snapshot().Revision() != 1 {
		t.Fatalf("seeded store: flag a %+v %v, revision %d", f, ok, s1.Snapshot().Revision())
	}
	if _, err := s1.Update("a", Patch{Percentage: new(25.0)}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seed, []byte("flags:\n  a: {percentage: 99}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := openFleet(t, FleetOptions{URL: db.URL, SeedFile: seed, Replica: "two"})
	if f, _ := s2.Snapshot().Flag("a"); f.Percentage != 25 || s2.Snapshot().Revision() != 2 {
		t.Errorf("second start: flag a at %v, revision %d; want the store's 25 at revision 2", f.Percentage, s2.Snapshot().Revision())
	}
	// The audit log is append-only.
	if _, err := db.Pool.Exec(context.Background(), `DELETE FROM strangler_flags.audit`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Errorf("DELETE FROM the audit log: %v, want it refused as append-only", err)
	}
	if _, err := db.Pool.Exec(context.Background(), `UPDATE strangler_flags.audit SET actor = 'x'`); err == nil {
		t.Error("UPDATE of the audit log was allowed")
	}
}

// TestFleetStoreUnreachableAtStart: with PostgreSQL unreachable a store
// opens from its local copy (stale, at the cached revision) and refuses
// writes with ErrStoreUnavailable; with no copy it refuses to open. No
// error shows the URL's password.
func TestFleetStoreUnreachableAtStart(t *testing.T) {
	const url = "postgres://proxy:s3cret-pw@127.0.0.1:1/flags?connect_timeout=2"
	cache := filepath.Join(t.TempDir(), "flags-cache.json")
	_, err := OpenFleetStore(context.Background(), FleetOptions{URL: url, CacheFile: cache}, StoreOptions{})
	if err == nil {
		t.Fatal("opened with the store unreachable and no local copy")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
	if err := writeFleetCache(cache, 7, []byte("flags:\n  a: {percentage: 40}\n")); err != nil {
		t.Fatal(err)
	}
	s := openFleet(t, FleetOptions{URL: url, CacheFile: cache})
	fl, _ := s.Fleet()
	if f, _ := s.Snapshot().Flag("a"); f.Percentage != 40 || s.Snapshot().Revision() != 7 || !fl.Stale() || fl.Up() {
		t.Errorf("from the local copy: a at %v, revision %d, stale %v, up %v; want 40, 7, stale, down", f.Percentage, s.Snapshot().Revision(), fl.Stale(), fl.Up())
	}
	_, err = s.Update("a", Patch{Percentage: new(50.0)}, "test")
	if !errors.Is(err, ErrStoreUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("write with the store down: %v, want ErrStoreUnavailable without the password", err)
	}
}
