package apply

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// backlogProc commits n transactions of 5 row changes (2 inserts, 2
// updates, 1 delete) on keys from base, as BenchmarkApplyBacklog does.
const backlogProc = `CREATE PROCEDURE backlog(n int, base bigint) LANGUAGE plpgsql AS $$
	DECLARE i int;
	BEGIN
		FOR i IN 1..n LOOP
			INSERT INTO acct VALUES (base + 2 * i, 'n', i, 'new'), (base + 2 * i + 1, 'n', i, NULL);
			UPDATE acct SET balance = balance + 1 WHERE id = base + 2 * i + 1;
			UPDATE acct SET note = 'u' || i WHERE id = base + 2 * i + 1;
			DELETE FROM acct WHERE id = base + 2 * i;
			COMMIT;
		END LOOP;
	END $$;`

// BenchmarkTwoWayApplyBacklog measures two-way apply throughput: b.N small
// transactions of 5 row changes are committed on each side, on keys of
// their own, while the sync is stopped; then one two-way run catches up
// with both backlogs at once. It reports row changes per second per
// direction (each direction's changes over the run's time).
func BenchmarkTwoWayApplyBacklog(b *testing.B) {
	c := twoWayCluster(b)
	p := pairIn(b, c, benchSchema+`INSERT INTO acct SELECT g, 'o' || g, g, 'x' FROM generate_series(1, 10000) g;`+backlogProc,
		benchSchema+backlogProc)
	cfg := p.twoWay("bench2", "", mapping.TableSpec{Source: "acct"})
	cfg.UntilCaughtUp = true
	ctx := context.Background()
	if err := Run(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, side := range []struct {
		pool *pgxpool.Pool
		base int
	}{{p.src.Pool, 1_000_000}, {p.dst.Pool, 50_000_000}} {
		wg.Go(func() { execAll(b, side.pool, fmt.Sprintf("CALL backlog(%d, %d)", b.N, side.base)) })
	}
	wg.Wait()
	b.ResetTimer()
	start := time.Now()
	if err := Run(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	const q = `SELECT count(*), sum(balance), count(note) FROM acct`
	if s, d := dump(b, p.src.Pool, q), dump(b, p.dst.Pool, q); s != d {
		b.Fatalf("after catching up: got %s in the target, %s in the source", d, s)
	}
	b.ReportMetric(float64(5*b.N)/elapsed.Seconds(), "changes/s/direction")
}

// BenchmarkTwoWayLag runs a workload of about 1,000 row changes per second
// on each side (200 transactions of 5 changes, on keys of each side's own)
// for 10 seconds per iteration under a running two-way sync, and reports
// the p50 and p99 delay from the insert on one side to the insert of the
// same row on the other, per direction, read from the one cluster's clock.
// applied_at is not mapped: each side fills it when the row is inserted
// there.
func BenchmarkTwoWayLag(b *testing.B) {
	const schema = `CREATE TABLE ev (id bigint PRIMARY KEY, v int, created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
		applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`
	c := twoWayCluster(b)
	p := pairIn(b, c, schema, schema)
	cfg := p.twoWay("lag2", "", mapping.TableSpec{Source: "ev", Columns: map[string]string{"id": "id", "v": "v", "created_at": "created_at"}})
	r := startSync(b, cfg)
	// The first start's copy replaces the target's rows: write only after.
	cdctest.WaitCopied(b, p.dst.Pool, "lag2")
	cdcWaitStreaming(b, p)
	ctx := context.Background()
	const txPerSecond, seconds, workers = 200, 10, 3
	b.ResetTimer()
	start := time.Now()
	var changes [2]int
	for range b.N {
		var wg sync.WaitGroup
		for s, side := range []struct {
			pool *pgxpool.Pool
			base int
		}{{p.src.Pool, 0}, {p.dst.Pool, 500_000_000}} {
			wg.Go(func() {
				ids := make(chan int)
				errs := make(chan error, workers)
				for range workers {
					go func() {
						for id := range ids {
							if _, err := side.pool.Exec(ctx, fmt.Sprintf(`BEGIN; INSERT INTO ev (id, v) VALUES (%[1]d, 0), (%[1]d + 1, 0), (%[1]d + 2, 0);
								UPDATE ev SET v = v + 1 WHERE id = %[1]d; DELETE FROM ev WHERE id = %[1]d + 2; COMMIT`, id)); err != nil {
								errs <- err
								return
							}
						}
						errs <- nil
					}()
				}
				round := time.Now()
				for i := range txPerSecond * seconds {
					time.Sleep(time.Until(round.Add(time.Duration(i) * time.Second / txPerSecond)))
					changes[s] += 5
					ids <- side.base + changes[s]
				}
				close(ids)
				for range workers {
					if err := <-errs; err != nil {
						b.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	rate := float64(changes[0]+changes[1]) / 2 / time.Since(start).Seconds()
	b.StopTimer()
	waitSame(b, p, r, `SELECT count(*), sum(v) FROM ev`, `SELECT count(*), sum(v) FROM ev`)
	b.ReportMetric(rate, "changes/s/side")
	for _, dir := range []struct {
		name string
		pool *pgxpool.Pool
		ids  string
	}{{"to-target", p.dst.Pool, "id BETWEEN 0 AND 499999999"}, {"to-source", p.src.Pool, "id >= 500000000"}} {
		lags := lagsOf(b, dir.pool, `SELECT extract(epoch FROM applied_at - created_at)::float8 FROM ev WHERE `+dir.ids)
		b.ReportMetric(lags[len(lags)/2]*1000, dir.name+"-p50-ms")
		b.ReportMetric(lags[len(lags)*99/100]*1000, dir.name+"-p99-ms")
	}
}

// cdcWaitStreaming waits until a row inserted on each side has reached the
// other.
func cdcWaitStreaming(b *testing.B, p pair) {
	b.Helper()
	execAll(b, p.src.Pool, `INSERT INTO ev (id, v) VALUES (-1, 0)`)
	execAll(b, p.dst.Pool, `INSERT INTO ev (id, v) VALUES (-2, 0)`)
	const both = `SELECT count(*) FROM ev WHERE id IN (-1, -2)`
	waitSame(b, p, nil, both, `SELECT 2::int8`)
	waitSame(b, p, nil, `SELECT 2::int8`, both)
}

func lagsOf(b *testing.B, pool *pgxpool.Pool, query string) []float64 {
	b.Helper()
	rows, err := pool.Query(context.Background(), query)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var lags []float64
	for rows.Next() {
		var l float64
		if err := rows.Scan(&l); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, l)
	}
	if len(lags) == 0 {
		b.Fatal("no rows")
	}
	sort.Float64s(lags)
	return lags
}
