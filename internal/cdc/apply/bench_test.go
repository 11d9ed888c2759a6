package apply

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/mapping"
)

const benchSchema = `CREATE TABLE acct (id bigint PRIMARY KEY, owner text NOT NULL, balance bigint, note text);`

// BenchmarkApplyBacklog measures apply throughput: b.N small source
// transactions of 5 row changes each (2 inserts, 2 updates, 1 delete) are
// committed while the sync is stopped, then one run catches up with them.
// It reports row changes applied per second.
func BenchmarkApplyBacklog(b *testing.B) {
	p := newPair(b, benchSchema+`INSERT INTO acct SELECT g, 'o' || g, g, 'x' FROM generate_series(1, 10000) g;
		CREATE PROCEDURE backlog(n int) LANGUAGE plpgsql AS $$
		DECLARE i int;
		BEGIN
			FOR i IN 1..n LOOP
				INSERT INTO acct VALUES (100000 + 2 * i, 'n', i, 'new'), (100001 + 2 * i, 'n', i, NULL);
				UPDATE acct SET balance = balance + 1 WHERE id = 1 + (i * 7) % 10000;
				UPDATE acct SET note = 'u' || i WHERE id = 1 + (i * 13) % 10000;
				DELETE FROM acct WHERE id = 100000 + 2 * i;
				COMMIT;
			END LOOP;
		END $$;`, benchSchema)
	cfg := p.config("bench", mapping.TableSpec{Source: "acct"})
	cfg.UntilCaughtUp = true
	ctx := context.Background()
	if err := Run(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	execAll(b, p.src.Pool, fmt.Sprintf("CALL backlog(%d)", b.N))
	b.ResetTimer()
	start := time.Now()
	if err := Run(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if s, d := dump(b, p.src.Pool, `SELECT count(*), sum(balance), count(note) FROM acct`), dump(b, p.dst.Pool, `SELECT count(*), sum(balance), count(note) FROM acct`); s != d {
		b.Fatalf("after catching up: got %s, want %s", d, s)
	}
	b.ReportMetric(float64(5*b.N)/elapsed.Seconds(), "changes/s")
}

// BenchmarkEndToEndLag runs a source workload of about 2,000 row changes
// per second (400 transactions of 5 changes) for 10 seconds per iteration
// under a running sync, and reports the p50 and p99 delay between the
// source insert and the target insert of each new row, read from both
// servers' clock (the same clock here).
func BenchmarkEndToEndLag(b *testing.B) {
	p := newPair(b,
		`CREATE TABLE ev (id bigint PRIMARY KEY, v int, created_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE TABLE ev (id bigint PRIMARY KEY, v int, created_at timestamptz NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	r := startSync(b, p.config("lag", mapping.TableSpec{Source: "ev"}))
	waitSame(b, p, r, `SELECT count(*) FROM ev`, `SELECT count(*) FROM ev`)
	ctx := context.Background()
	const txPerSecond, seconds, workers = 400, 10, 4
	next := 0
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		ids := make(chan int)
		errs := make(chan error, workers)
		for range workers {
			go func() {
				for id := range ids {
					if _, err := p.src.Pool.Exec(ctx, fmt.Sprintf(`BEGIN; INSERT INTO ev (id, v) VALUES (%[1]d, 0), (%[1]d + 1, 0), (%[1]d + 2, 0);
						UPDATE ev SET v = v + 1 WHERE id = %[1]d; DELETE FROM ev WHERE id = %[1]d + 2; COMMIT`, id)); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		// Paced on a fixed schedule, catching up when behind.
		round := time.Now()
		for i := range txPerSecond * seconds {
			time.Sleep(time.Until(round.Add(time.Duration(i) * time.Second / txPerSecond)))
			next += 5
			ids <- next
		}
		close(ids)
		for range workers {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	rate := float64(next) / time.Since(start).Seconds()
	b.StopTimer()
	waitSame(b, p, r, `SELECT count(*), sum(v) FROM ev`, `SELECT count(*), sum(v) FROM ev`)
	rows, err := p.dst.Pool.Query(ctx, `SELECT extract(epoch FROM applied_at - created_at)::float8 FROM ev`)
	if err != nil {
		b.Fatal(err)
	}
	var lags []float64
	for rows.Next() {
		var l float64
		if err := rows.Scan(&l); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, l)
	}
	rows.Close()
	if len(lags) == 0 {
		b.Fatal("no rows")
	}
	sort.Float64s(lags)
	b.ReportMetric(rate, "source-changes/s")
	b.ReportMetric(lags[len(lags)/2]*1000, "p50-ms")
	b.ReportMetric(lags[len(lags)*99/100]*1000, "p99-ms")
	b.ReportMetric(lags[len(lags)-1]*1000, "max-ms")
}
