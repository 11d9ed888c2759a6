package reconcile

import (
	"context"
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// BenchmarkVerify verifies 200,000 rows per side; bench/verify.sh measures
// 2,000,000 against the baselines.
func BenchmarkVerify(b *testing.B) {
	ddl := `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz, balance numeric(12,2), note text);
		INSERT INTO users SELECT g, 'user' || g || '@example.com', timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
			(g % 1000) / 10.0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(1, 200000) g;`
	p := newDBPair(b, ddl, ddl)
	execSQL(b, p.src, "VACUUM ANALYZE users")
	execSQL(b, p.dst, "VACUUM ANALYZE users")
	ctx := context.Background()
	tables, err := mapping.ResolveAll(ctx, p.src, p.dst, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, wantDiffs int64) {
		for b.Loop() {
			rep, err := Verify(ctx, p.src, p.dst, tables, Options{})
			if err != nil {
				b.Fatal(err)
			}
			tr := rep.Tables[0]
			if got := tr.MissingInTarget + tr.ExtraInTarget + tr.Mismatched; got != wantDiffs {
				b.Fatalf("got %d differences, want %d", got, wantDiffs)
			}
		}
		b.ReportMetric(float64(200000*b.N)/b.Elapsed().Seconds(), "rows/s")
	}
	b.Run("identical", func(b *testing.B) { run(b, 0) })
	execSQL(b, p.dst, `UPDATE users SET note = 'x' WHERE id IN (10, 50000, 123456, 199999);
		DELETE FROM users WHERE id IN (7, 77777, 150000); INSERT INTO users (id, email) VALUES (300000, 'e'), (400000, 'f'), (500000, 'g')`)
	b.Run("10 differences", func(b *testing.B) { run(b, 10) })
}

// BenchmarkRepair repairs 20,000 differing rows of 50,000 (10,000
// mismatched, 5,000 missing, 5,000 extra) per iteration.
func BenchmarkRepair(b *testing.B) {
	ddl := `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz, balance numeric(12,2), note text);
		INSERT INTO users SELECT g, 'user' || g || '@example.com', timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
			(g % 1000) / 10.0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(1, 50000) g;`
	p := newDBPair(b, ddl, ddl)
	ctx := context.Background()
	tables, err := mapping.ResolveAll(ctx, p.src, p.dst, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		execSQL(b, p.dst, `UPDATE users SET note = 'x' WHERE id % 5 = 0;
			DELETE FROM users WHERE id % 10 = 1;
			INSERT INTO users (id, email) SELECT g, 'e' FROM generate_series(100001, 105000) g`)
		b.StartTimer()
		rep, err := Verify(ctx, p.src, p.dst, tables, Options{Repair: true})
		if err != nil {
			b.Fatal(err)
		}
		if tr := rep.Tables[0]; tr.Repaired != 20000 || !tr.Consistent {
			b.Fatalf("got repaired %d consistent %v, want 20000 true", tr.Repaired, tr.Consistent)
		}
	}
	b.ReportMetric(float64(20000*b.N)/b.Elapsed().Seconds(), "rows/s")
}
