package backfill

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// progressLine is a TableProgress without its timestamps, for comparing.
func progressLine(p TableProgress) string {
	est := "unknown"
	if p.EstimatedRows != nil {
		est = fmt.Sprint(*p.EstimatedRows)
	}
	return fmt.Sprintf("%s %s->%s rows=%d ranges=%d/%d done=%t estimate=%s",
		p.Name, p.Source, p.Target, p.RowsCopied, p.RangesDone, p.Ranges, p.Done, est)
}

func TestReadProgress(t *testing.T) {
	ctx := context.Background()
	fresh := pgtest.NewDB(t)
	p := newPair(t, `
		CREATE TABLE a (id int PRIMARY KEY, v text);
		INSERT INTO a SELECT i, 'v' || i FROM generate_series(1, 100) i;
		CREATE TABLE b (id int PRIMARY KEY, v text);
		INSERT INTO b SELECT i, 'v' || i FROM generate_series(1, 60) i;
		ANALYZE b`,
		`CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "a"}, mapping.TableSpec{Source: "b"})

	// a is copied whole in two ranges; the run is cancelled after two
	// batches of b.
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := p.opts(10, 2)
	batchesOfB := 0
	opts.OnBatch = func(e BatchEvent) {
		if e.Table.Name == "b" {
			if batchesOfB++; batchesOfB == 2 {
				cancel()
			}
		}
	}
	// b gets one range: the cancellation then lands after exactly two
	// batches.
	if _, err := Run(ctx2, opts, tables[:1]); err != nil {
		t.Fatalf("backfill a: %v", err)
	}
	opts.Workers = 1
	if _, err := Run(ctx2, opts, tables[1:]); !errors.Is(err, context.Canceled) {
		t.Fatalf("backfill b: got error %v, want context.Canceled", err)
	}

	doneA := "backfill public.a->public.a rows=100 ranges=2/2 done=true estimate=100"
	tests := []struct {
		name    string
		src     *pgxpool.Pool
		dst     *pgxpool.Pool
		targets []mapping.Ident
		want    []string
	}{
		{name: "no backfill ran", src: fresh.Pool, dst: fresh.Pool, want: nil},
		{name: "done and cancelled", src: p.src.Pool, dst: p.dst.Pool, want: []string{
			doneA,
			"backfill public.b->public.b rows=20 ranges=0/1 done=false estimate=60",
		}},
		{name: "one table", src: p.src.Pool, dst: p.dst.Pool, targets: []mapping.Ident{{Schema: "public", Name: "b"}}, want: []string{
			"backfill public.b->public.b rows=20 ranges=0/1 done=false estimate=60",
		}},
		{name: "unknown table", src: p.src.Pool, dst: p.dst.Pool, targets: []mapping.Ident{{Schema: "public", Name: "zz"}}, want: nil},
		{name: "without the source", dst: p.dst.Pool, want: []string{
			doneA,
			"backfill public.b->public.b rows=20 ranges=0/1 done=false estimate=unknown",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadProgress(ctx, tc.src, tc.dst, tc.targets)
			if err != nil {
				t.Fatalf("ReadProgress: %v", err)
			}
			if got == nil {
				t.Fatalf("got nil, want an empty list (it is JSON's [])")
			}
			var lines []string
			for _, p := range got {
				lines = append(lines, progressLine(p))
				if p.StartedAt.IsZero() || p.UpdatedAt.Before(p.StartedAt) {
					t.Errorf("%s: got started %v, updated %v, want a start and an update after it", p.Target, p.StartedAt, p.UpdatedAt)
				}
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.want) {
				t.Errorf("got\n%q\nwant\n%q", lines, tc.want)
			}
		})
	}
}
