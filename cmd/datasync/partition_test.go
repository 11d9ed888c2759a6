package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

// TestSyncPartitionedSourceNeedsConsent pins issue 15, item 4 at the
// command line: a partitioned source table is refused (exit 2, nothing
// created) until --accept-partition-limits, or accept_partition_limits in
// the config, accepts that partition TRUNCATE, DETACH and ATTACH are not
// replicated.
func TestSyncPartitionedSourceNeedsConsent(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	mustExec(t, src.Pool, `CREATE TABLE ev (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu'); INSERT INTO ev VALUES (1, 'eu');`)
	mustExec(t, dst.Pool, `CREATE TABLE ev (id int, region text, PRIMARY KEY (id, region))`)
	base := []string{"sync", "--source", src.URL, "--target", dst.URL, "--until-caught-up"}

	code, _, errOut := runCmd(t, append(base, "--name", "parts", "--table", "ev")...)
	if code != 2 || !strings.Contains(errOut, "source table public.ev is partitioned") || !strings.Contains(errOut, "--accept-partition-limits") {
		t.Fatalf("without consent: got exit %d, stderr %q; want exit 2 naming the table and the flag", code, errOut)
	}
	if n := queryInt(t, src.Pool, `SELECT count(*) FROM pg_replication_slots`); n != 0 {
		t.Fatalf("got %d slots after the refusal, want none", n)
	}

	code, _, errOut = runCmd(t, append(base, "--name", "parts", "--table", "ev", "--accept-partition-limits")...)
	if code != 0 {
		t.Fatalf("with --accept-partition-limits: got exit %d, want 0; stderr:\n%s", code, errOut)
	}
	cfg := filepath.Join(t.TempDir(), "datasync.yaml")
	if err := os.WriteFile(cfg, []byte("tables:\n  - source: ev\n    accept_partition_limits: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, append(base, "--name", "parts_cfg", "--config", cfg)...)
	if code != 0 {
		t.Fatalf("with accept_partition_limits in the config: got exit %d, want 0; stderr:\n%s", code, errOut)
	}
	if n := queryInt(t, dst.Pool, `SELECT count(*) FROM ev`); n != 1 {
		t.Errorf("got %d rows in the target, want 1", n)
	}
}
