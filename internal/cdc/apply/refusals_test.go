package apply

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// TestSyncPreflightRefusesWhatTheStreamCannotKeepEqual pins the sync
// refusals of issue 15. Each of these passed preflight and then lost or
// froze data in silence, or failed at the first apply: a source table
// mapped to two targets (item 6: only one got the stream), a generated
// source column (item 8: pgoutput does not send it), a deferrable key
// (items 5 and 11: a key swap lost a row; a deferrable primary key is no
// replica identity; ON CONFLICT cannot use a deferrable target key), a
// narrower type modifier (item 12: values rounded), and a partitioned
// source (item 4: partition TRUNCATE, DETACH and ATTACH never arrive).
// Each must stop before anything is created on either side, naming the
// table and what to do.
func TestSyncPreflightRefusesWhatTheStreamCannotKeepEqual(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE users (id int PRIMARY KEY, v text);
		CREATE TABLE gen (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED);
		CREATE TABLE swap (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
		ALTER TABLE swap REPLICA IDENTITY FULL;
		CREATE TABLE dpk (id int PRIMARY KEY DEFERRABLE, code text NOT NULL UNIQUE, v text);
		CREATE TABLE dk (id int PRIMARY KEY, v text);
		CREATE TABLE money (id int PRIMARY KEY, amount numeric(12,4));
		CREATE TABLE ev (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');`, `
		CREATE TABLE ua (id int PRIMARY KEY, v text);
		CREATE TABLE ub (id int PRIMARY KEY, v text);
		CREATE TABLE gen (id int PRIMARY KEY, a int, twice int);
		CREATE TABLE swap (id int PRIMARY KEY, v text);
		CREATE TABLE dpk (id int, code text PRIMARY KEY, v text);
		CREATE TABLE dk (id int, v text, UNIQUE (id) DEFERRABLE);
		CREATE TABLE money (id int PRIMARY KEY, amount numeric(10,2));
		CREATE TABLE ev (id int, region text, PRIMARY KEY (id, region));`)
	tests := []struct {
		name  string
		specs []mapping.TableSpec
		want  []string
	}{
		{"one source, two targets", []mapping.TableSpec{{Source: "users", Target: "ua"}, {Source: "users", Target: "ub"}},
			[]string{"source table public.users is mapped to 2 target tables (public.users → public.ua, public.users → public.ub)", "run one sync per target"}},
		{"generated source column", []mapping.TableSpec{{Source: "gen"}},
			[]string{`source column "twice" is a generated column, which logical replication does not send`, "GENERATED ALWAYS AS"}},
		{"deferrable source key with replica identity full", []mapping.TableSpec{{Source: "swap"}},
			[]string{"public.swap → public.swap: the key (\"id\") is unique in the source only through a DEFERRABLE constraint", "NOT DEFERRABLE"}},
		{"deferrable primary key as replica identity", []mapping.TableSpec{{Source: "dpk", Key: []string{"code"}}},
			[]string{"DEFERRABLE primary key, which PostgreSQL does not use as replica identity", "REPLICA IDENTITY USING INDEX"}},
		{"deferrable target key", []mapping.TableSpec{{Source: "dk"}},
			[]string{"DEFERRABLE, which INSERT … ON CONFLICT cannot use"}},
		{"narrower numeric", []mapping.TableSpec{{Source: "money"}},
			[]string{"column amount is numeric(12,4) in the source but numeric(10,2) in the target"}},
		{"partitioned source", []mapping.TableSpec{{Source: "ev"}},
			[]string{"source table public.ev is partitioned", "TRUNCATE of a single partition", "--accept-partition-limits", "accept_partition_limits: true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := p.config("refused", tc.specs...)
			cfg.UntilCaughtUp = true
			err := Run(testCtx(t), cfg)
			if !errors.Is(err, mapping.ErrPreflight) {
				t.Fatalf("got %v, want a preflight error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
			for _, q := range []string{`SELECT count(*)::text FROM pg_replication_slots`, `SELECT count(*)::text FROM pg_publication`} {
				if got := dump(t, p.src.Pool, q); got != "[0]\n" {
					t.Errorf("%s: got %s, want nothing created", q, got)
				}
			}
		})
	}

	t.Run("partitioned source accepted", func(t *testing.T) {
		cfg := p.config("parts_ok", mapping.TableSpec{Source: "ev", AcceptPartitionLimits: true})
		cfg.UntilCaughtUp = true
		if err := Run(testCtx(t), cfg); err != nil {
			t.Fatalf("got %v, want the sync to run once the limits are accepted", err)
		}
	})
}

// TestSyncIdentityKeys pins issue 15, item 10. (a) A source key GENERATED
// ALWAYS AS IDENTITY made preflight's probe fail, blaming a where filter
// that did not exist, so the sync never started. (b) The same on the
// target made the first streamed INSERT fail with SQLSTATE 428C9, and an
// update that leaves a TOASTed value unchanged set the key to itself,
// which such a column refuses too. (c) The target's identity and serial
// sequences stayed behind the copied and streamed keys, so the first
// insert after cutover collided; they must be advanced after the copy and
// when the sync stops, and the log must say so.
func TestSyncIdentityKeys(t *testing.T) {
	const src = `CREATE TABLE acct (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, big text);
		ALTER TABLE acct ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE ord (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
		INSERT INTO acct (v, big) SELECT 'v' || g, repeat('x', 5000) FROM generate_series(1, 5) g;
		INSERT INTO ord (v) SELECT 'v' || g FROM generate_series(1, 8) g;`
	p := newPair(t, src, `CREATE TABLE acct (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, big text);
		CREATE TABLE ord (id bigserial PRIMARY KEY, v text);`)
	cfg := p.config("ident", mapping.TableSpec{Source: "acct"}, mapping.TableSpec{Source: "ord"})
	var mu sync.Mutex
	var advanced []string
	cfg.Logger = slog.New(hookHandler{fn: func(r slog.Record) {
		if strings.Contains(r.Message, "advanced sequence") {
			mu.Lock()
			advanced = append(advanced, attr(r, "sequence").String()+"="+attr(r, "next_value").String())
			mu.Unlock()
		}
	}})
	r := startSync(t, cfg)
	const acctQuery, ordQuery = `SELECT id, v, md5(big) FROM acct ORDER BY id`, `SELECT * FROM ord ORDER BY id`
	waitSame(t, p, r, acctQuery, acctQuery)
	waitSame(t, p, r, ordQuery, ordQuery)
	execAll(t, p.src.Pool,
		`INSERT INTO acct (v, big) VALUES ('streamed', repeat('y', 5000))`,
		`UPDATE acct SET v = 'toast left alone' WHERE id = 2`,
		`UPDATE acct SET v = 'whole row', big = 'small' WHERE id = 3`,
		`INSERT INTO ord (v) SELECT 'w' || g FROM generate_series(1, 4) g`)
	waitSame(t, p, r, acctQuery, acctQuery)
	waitSame(t, p, r, ordQuery, ordQuery)
	if err := r.stop(t); err != nil {
		t.Fatalf("sync: %v", err)
	}

	mu.Lock()
	got := strings.Join(advanced, " ")
	mu.Unlock()
	// After the copy: 6 and 9; at the stop: 7 and 13.
	for _, want := range []string{"public.acct_id_seq=6", "public.ord_id_seq=9", "public.acct_id_seq=7", "public.ord_id_seq=13"} {
		if !strings.Contains(got, want) {
			t.Errorf("log of advanced sequences: got %q, want it to contain %s", got, want)
		}
	}
	execAll(t, p.dst.Pool, `INSERT INTO acct (v) VALUES ('after cutover')`, `INSERT INTO ord (v) VALUES ('after cutover')`)
	for q, want := range map[string]string{
		`SELECT max(id)::text FROM acct`: "[7]\n",
		`SELECT max(id)::text FROM ord`:  "[13]\n",
	} {
		if got := dump(t, p.dst.Pool, q); got != want {
			t.Errorf("%s: got %s, want %s", q, got, want)
		}
	}
}
