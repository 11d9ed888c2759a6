package backfill

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// sampleRows is about how many keys are sampled to split a non-integer key
// into ranges.
const sampleRows = 20000

var integerTypes = map[string]bool{"smallint": true, "integer": true, "bigint": true}

// planSpans splits a table's key space into about n ranges. The first range
// starts and the last ends unbounded, so rows inserted outside the seen keys
// are still covered; the bounds only balance the work.
func planSpans(ctx context.Context, src *pgxpool.Pool, t *mapping.Table, n int) ([]*span, error) {
	var bounds [][]string
	var err error
	switch {
	case n <= 1:
	case len(t.Key) == 1 && integerTypes[t.KeyColumns()[0].SourceType]:
		bounds, err = integerBounds(ctx, src, t, n)
	default:
		bounds, err = sampledBounds(ctx, src, t, n)
	}
	if err != nil {
		return nil, fmt.Errorf("split %s into ranges: %w", t.Source, err)
	}
	return spansOf(bounds), nil
}

// spansOf turns inner bounds b1 < b2 < … into (-∞, b1], (b1, b2], …, (bk, ∞).
func spansOf(bounds [][]string) []*span {
	spans := make([]*span, 0, len(bounds)+1)
	var start []string
	for i, b := range bounds {
		spans = append(spans, &span{id: i, start: start, end: b})
		start = b
	}
	return append(spans, &span{id: len(bounds), start: start})
}

// integerBounds splits [min, max] of a single integer key into n equal
// parts.
func integerBounds(ctx context.Context, src *pgxpool.Pool, t *mapping.Table, n int) ([][]string, error) {
	k := mapping.QuoteIdent(t.KeyColumns()[0].Source)
	var lo, hi *int64
	err := src.QueryRow(ctx, "SELECT min("+k+")::bigint, max("+k+")::bigint FROM "+t.Source.Quoted()+t.SourceWhere()).Scan(&lo, &hi)
	if err != nil {
		return nil, err
	}
	if lo == nil || hi == nil {
		return nil, nil
	}
	return splitInts(*lo, *hi, n), nil
}

// splitInts returns the inner bounds that cut [lo, hi] into n parts of
// about the same number of values, fewer when it holds fewer than n values.
// Each bound is the last value of its part.
func splitInts(lo, hi int64, n int) [][]string {
	width := uint64(hi) - uint64(lo) // count of values minus one; no overflow
	var bounds [][]string
	var prev int64
	for i := uint64(1); i < uint64(n); i++ {
		// off = (width+1)*i/n in 128 bits, since width+1 may be 2^64.
		h, l := bits.Mul64(width, i)
		l, carry := bits.Add64(l, i, 0)
		off, _ := bits.Div64(h+carry, l, uint64(n))
		if off == 0 {
			continue
		}
		b := int64(uint64(lo) + off - 1)
		if (len(bounds) > 0 && b <= prev) || b >= hi {
			continue
		}
		bounds = append(bounds, []string{strconv.FormatInt(b, 10)})
		prev = b
	}
	return bounds
}

// sampledBounds picks n-1 quantiles of the key from a sample of the table.
func sampledBounds(ctx context.Context, src *pgxpool.Pool, t *mapping.Table, n int) ([][]string, error) {
	est, err := reltuples(ctx, src, t.Source)
	if err != nil {
		return nil, err
	}
	sample := ""
	if est > sampleRows {
		sample = fmt.Sprintf(" TABLESAMPLE SYSTEM (%g)", 100*float64(sampleRows)/float64(est))
	}
	cols := make([]string, len(t.Key))
	for i, c := range t.KeyColumns() {
		cols[i] = mapping.QuoteIdent(c.Source) + "::text"
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + t.Source.Quoted() + sample + t.SourceWhere() +
		" ORDER BY " + t.SourceKeyList()
	rows, err := src.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys [][]string
	for rows.Next() {
		vals := make([]string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		keys = append(keys, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return quantiles(keys, n), nil
}

// quantiles returns the keys at 1/n, 2/n, … of the sorted keys, without
// repeating one.
func quantiles(keys [][]string, n int) [][]string {
	var bounds [][]string
	for i := 1; i < n; i++ {
		j := i * len(keys) / n
		if j == 0 || j >= len(keys) {
			continue
		}
		if len(bounds) > 0 && strings.Join(bounds[len(bounds)-1], "\x00") == strings.Join(keys[j], "\x00") {
			continue
		}
		bounds = append(bounds, keys[j])
	}
	return bounds
}

// reltuples is the planner's row estimate of a table, -1 when it was never
// analysed.
func reltuples(ctx context.Context, src *pgxpool.Pool, id mapping.Ident) (int64, error) {
	var n float64
	err := src.QueryRow(ctx, `SELECT c.reltuples FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
		WHERE s.nspname = $1 AND c.relname = $2`, id.Schema, id.Name).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("estimate rows of %s: %w", id, err)
	}
	return int64(n), nil
}

// estimateRows is the expected number of rows to copy, for the progress
// bar: the planner's estimate, or a count when there is none.
func estimateRows(ctx context.Context, src *pgxpool.Pool, t *mapping.Table) (int64, error) {
	n, err := reltuples(ctx, src, t.Source)
	if err != nil || n >= 0 {
		return n, err
	}
	if err := src.QueryRow(ctx, "SELECT count(*) FROM "+t.Source.Quoted()+t.SourceWhere()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", t.Source, err)
	}
	return n, nil
}
