package backfill

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func exec(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	tb.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// pair is a source and a target database for one test.
type pair struct {
	src, dst *pgtest.DB
}

func newPair(tb testing.TB, srcDDL, dstDDL string) pair {
	tb.Helper()
	p := pair{src: pgtest.NewDB(tb), dst: pgtest.NewDB(tb)}
	exec(tb, p.src.Pool, srcDDL)
	exec(tb, p.dst.Pool, dstDDL)
	return p
}

func (p pair) resolve(tb testing.TB, specs ...mapping.TableSpec) []*mapping.Table {
	tb.Helper()
	tables, err := mapping.ResolveAll(context.Background(), p.src.Pool, p.dst.Pool, specs)
	if err != nil {
		tb.Fatalf("resolve: %v", err)
	}
	return tables
}

func (p pair) opts(batch, workers int) Options {
	return Options{Source: p.src.Pool, Target: p.dst.Pool, BatchSize: batch, Workers: workers}
}

func (p pair) run(tb testing.TB, opts Options, tables []*mapping.Table) Summary {
	tb.Helper()
	sum, err := Run(context.Background(), opts, tables)
	if err != nil {
		tb.Fatalf("backfill: %v", err)
	}
	return sum
}

func queryStrings(tb testing.TB, pool *pgxpool.Pool, sql string) []string {
	tb.Helper()
	rows, err := pool.Query(context.Background(), sql)
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return out
}

// sourceRows are the rows the mapping selects from the source, in key
// order, each as the text of a row value in the target's types.
func sourceRows(tb testing.TB, pool *pgxpool.Pool, t *mapping.Table) []string {
	tb.Helper()
	return queryStrings(tb, pool, "SELECT ROW("+t.SourceSelectList()+")::text FROM "+t.Source.Quoted()+
		t.SourceWhere()+" ORDER BY "+t.SourceKeyList())
}

// targetRows are the mapped columns of every target row, in key order.
func targetRows(tb testing.TB, pool *pgxpool.Pool, t *mapping.Table) []string {
	tb.Helper()
	return queryStrings(tb, pool, "SELECT ROW("+t.TargetColumnList()+")::text FROM "+t.Target.Quoted()+
		" ORDER BY "+t.TargetKeyList())
}

// assertSameRows fails unless the target holds exactly the source's mapped
// rows, every column, no more.
func assertSameRows(tb testing.TB, p pair, t *mapping.Table) {
	tb.Helper()
	want := sourceRows(tb, p.src.Pool, t)
	got := targetRows(tb, p.dst.Pool, t)
	if slices.Equal(got, want) {
		return
	}
	tb.Errorf("target %s: got %d rows, want %d", t.Target, len(got), len(want))
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			tb.Fatalf("first difference at row %d:\ngot  %.200s\nwant %.200s", i, g, w)
		}
	}
}

// xmins maps each target row's key text to its xmin, which changes when the
// row is written.
func xmins(tb testing.TB, pool *pgxpool.Pool, t *mapping.Table) map[string]string {
	tb.Helper()
	rows := queryStrings(tb, pool, "SELECT ROW("+t.TargetKeyList()+")::text || ' ' || xmin::text FROM "+t.Target.Quoted())
	out := map[string]string{}
	for _, r := range rows {
		i := strings.LastIndexByte(r, ' ')
		out[r[:i]] = r[i+1:]
	}
	return out
}

func count(tb testing.TB, pool *pgxpool.Pool, sql string) int64 {
	tb.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}
