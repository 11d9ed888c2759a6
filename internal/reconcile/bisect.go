package reconcile

import (
	"context"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"
)

// keyRange is the half-open key range [lo, hi); a nil bound is open. Keys
// are the key columns' text forms in the target's types.
type keyRange struct {
	lo, hi []string
}

// samplePages is how many pages the first sample reads: below twice that a
// table is walked in full. A page holds a run of neighbouring keys, so the
// first pass makes at most one bucket per sampled page.
const samplePages = 512

// maxDepth stops splitting ranges that a walk cannot divide any more; such
// a range is compared row by row whatever its size.
const maxDepth = 12

// args collects query parameters and hands out their placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// keyTuple renders a key as a row of parameters cast to the key types.
func (p *pair) keyTuple(k []string, a *args) string {
	parts := make([]string, len(k))
	for i, v := range k {
		parts[i] = a.add(v) + "::" + p.keyTypes[i]
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func (s *side) keyRow() string {
	if len(s.keyCols) == 1 {
		return s.keyCols[0]
	}
	return "(" + strings.Join(s.keyCols, ", ") + ")"
}

// where is the WHERE clause selecting the range on side s, with the source
// filter.
func (p *pair) where(s *side, r keyRange, a *args) string {
	var conds []string
	if s.filter != "" {
		conds = append(conds, "("+s.filter+")")
	}
	if r.lo != nil {
		conds = append(conds, s.keyRow()+" >= "+p.keyTuple(r.lo, a))
	}
	if r.hi != nil {
		conds = append(conds, s.keyRow()+" < "+p.keyTuple(r.hi, a))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// buckets split a key range for one pass: bounds[i] is the first key of
// bucket i+1.
type buckets struct {
	bounds [][]string
	// byShift numbers the bucket of an integer key k by arithmetic, as
	// (k >> shift) - base, instead of comparing k with the bounds; the
	// bounds are then the multiples of 1 << shift between the keys, and a
	// key beyond them (a row inserted since they were chosen) counts in the
	// first or the last bucket, whose ranges are open.
	byShift bool
	shift   uint
	base    int64
}

// bucketExpr is the SQL expression of the bucket a row of side s falls in:
// for bounds compared as keys, a binary tree of key comparisons that
// numbers the bucket 0..len(bounds).
func (p *pair) bucketExpr(s *side, b buckets, a *args) string {
	if b.byShift {
		return s.keyCols[0] + " >> " + strconv.FormatUint(uint64(b.shift), 10)
	}
	var tree func(lo, hi int) string
	tree = func(lo, hi int) string {
		if lo == hi {
			return strconv.Itoa(lo)
		}
		mid := (lo + hi + 1) / 2
		return "CASE WHEN " + s.keyRow() + " < " + p.keyTuple(b.bounds[mid-1], a) +
			" THEN " + tree(lo, mid-1) + " ELSE " + tree(mid, hi) + " END"
	}
	return tree(0, len(b.bounds))
}

// index returns the bucket, 0..len(bounds), that bucketExpr's value v
// stands for.
func (b buckets) index(v int64) int {
	if !b.byShift {
		return int(v)
	}
	// v - base, clamped, without overflowing.
	switch {
	case v <= b.base:
		return 0
	case uint64(v)-uint64(b.base) >= uint64(len(b.bounds)):
		return len(b.bounds)
	default:
		return int(v - b.base)
	}
}

// shiftBuckets numbers the buckets of integer keys lo..hi by arithmetic:
// each bucket holds the keys of one multiple of a power of two, as many
// buckets as rows (an estimate) fill leaves of leafRows, up to maxBuckets.
// Gaps in the keys make buckets of unequal row counts, but a bucket never
// holds more rows than its width, since keys are unique. It reports false
// when the keys are too sparse for that to keep buckets near their share of
// the rows: buckets of sampled keys suit them better. The shift is at most
// maxShift.
func shiftBuckets(lo, hi, rows int64, maxBuckets, leafRows int, maxShift uint) (buckets, bool) {
	if lo > hi {
		return buckets{}, false
	}
	want := int64(max(1, min(maxBuckets, int((rows+int64(leafRows)-1)/int64(leafRows)))))
	// The smallest width that needs no more than want buckets. The
	// difference is taken in uint64: it may not fit in an int64.
	var shift uint
	for shift < min(maxShift, 62) && uint64(hi>>shift)-uint64(lo>>shift) >= uint64(want) {
		shift++
	}
	share := max(int64(leafRows), (rows+want-1)/want)
	if uint64(hi>>shift)-uint64(lo>>shift) >= uint64(want) || int64(1)<<shift > 8*share {
		return buckets{}, false
	}
	b := buckets{byShift: true, shift: shift, base: lo >> shift}
	for i := range (hi >> shift) - b.base {
		b.bounds = append(b.bounds, []string{strconv.FormatInt((b.base+i+1)<<shift, 10)})
	}
	return b, true
}

// agg is a bucket's row count and hash sum on one side.
type agg struct {
	count int64
	sum   string
}

// plus returns the aggregate of the rows of g and o together.
func (g agg) plus(o agg) (agg, error) {
	x, okX := new(big.Int).SetString(g.sum, 10)
	y, okY := new(big.Int).SetString(o.sum, 10)
	if !okX || !okY {
		return agg{}, fmt.Errorf("hash sums %q and %q are not integers", g.sum, o.sum)
	}
	return agg{count: g.count + o.count, sum: x.Add(x, y).String()}, nil
}

// aggregate returns, per bucket of r, the count and hash sum of side s.
// Buckets without rows are absent.
func (p *pair) aggregate(ctx context.Context, s *side, r keyRange, b buckets) (map[int]agg, error) {
	var a args
	bucket := p.bucketExpr(s, b, &a)
	// The subquery's WITH clause, which nothing reads, keeps the planner
	// from pulling the subquery up: grouping by its output column, it
	// estimates a few groups instead of one per key, and hashes rather
	// than sorting the table. Unlike OFFSET 0, which does the same, it
	// leaves parallel workers free to aggregate their part of the table
	// each (Partial HashAggregate), instead of passing every row to one
	// process that groups them all.
	q := "SELECT b, count(*), coalesce(sum(h), 0)::text FROM (WITH unread AS (SELECT) SELECT " + bucket + " AS b, " +
		s.rowHash + " AS h" + s.from() + p.where(s, r, &a) + ") s GROUP BY b"
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, fmt.Errorf("checksum %s ranges: %w", s.name, err)
	}
	out := map[int]agg{}
	for rows.Next() {
		var v int64
		var g agg
		if err := rows.Scan(&v, &g.count, &g.sum); err != nil {
			rows.Close()
			return nil, fmt.Errorf("checksum %s ranges: %w", s.name, err)
		}
		i := b.index(v)
		if prev, ok := out[i]; ok {
			if g, err = prev.plus(g); err != nil {
				rows.Close()
				return nil, fmt.Errorf("checksum %s ranges: %w", s.name, err)
			}
		}
		out[i] = g
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("checksum %s ranges: %w", s.name, err)
	}
	return out, nil
}

// walk returns keys that split r on side s into about parts ranges of
// equal row counts: every Nth key of an ordered walk over the range. With
// pct > 0 the walk reads a TABLESAMPLE of that many percent of the pages
// and sizes the parts by leafRows over the estimated row count. It also
// returns the number of rows (or sampled rows) walked.
func (p *pair) walk(ctx context.Context, s *side, r keyRange, parts, leafRows int, pct float64) ([][]string, int64, error) {
	var a args
	sample := ""
	frac := 1.0
	if pct > 0 && pct < 100 {
		sample = " TABLESAMPLE SYSTEM (" + a.add(pct) + "::float8)"
		frac = pct / 100
	}
	cols := make([]string, len(s.keyText))
	outer := make([]string, len(s.keyText))
	for i, k := range s.keyText {
		cols[i] = fmt.Sprintf("%s AS k%d", k, i)
		outer[i] = fmt.Sprintf("k%d", i)
	}
	// parts: as many as the estimated rows fill leaves, up to parts.
	nParts := "least(" + a.add(parts) + "::float8, greatest(1, ceil(n / " + a.add(frac) + "::float8 / " + a.add(leafRows) + "::float8)))"
	q := "SELECT " + strings.Join(outer, ", ") + ", n FROM (SELECT " + strings.Join(cols, ", ") +
		", row_number() OVER (ORDER BY " + strings.Join(s.keyCols, ", ") + ") AS rn, count(*) OVER () AS n" +
		" FROM " + s.rel + sample + p.where(s, r, &a) + ") s" +
		" WHERE rn < n AND rn % greatest(1, ceil(n / " + nParts + "))::bigint = 0 ORDER BY rn"
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, 0, fmt.Errorf("sample %s keys: %w", s.name, err)
	}
	defer rows.Close()
	var bounds [][]string
	var n int64
	for rows.Next() {
		k := make([]string, len(s.keyText))
		dest := make([]any, 0, len(k)+1)
		for i := range k {
			dest = append(dest, &k[i])
		}
		dest = append(dest, &n)
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, fmt.Errorf("sample %s keys: %w", s.name, err)
		}
		bounds = append(bounds, k)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("sample %s keys: %w", s.name, err)
	}
	return bounds, n, nil
}

// result is what comparing a table found.
type result struct {
	sourceRows, targetRows int64
	diffs                  diffs
	// done counts the rows checked so far, of total.
	done  atomic.Int64
	total int64
}

// compare runs the checksum bisection over the whole table.
func (p *pair) compare(ctx context.Context, opts Options) (*result, error) {
	res := &result{}
	b, total, err := p.firstBuckets(ctx, opts)
	if err != nil {
		return nil, err
	}
	opts.Logger.DebugContext(ctx, "first pass", "table", p.table.Target.String(), "buckets", len(b.bounds)+1, "by_shift", b.byShift, "estimated_rows", total)
	res.total = total
	p.progress(opts, PhaseScan, 0, res.total)
	res.diffs, err = p.check(ctx, keyRange{}, b, opts, res, 0)
	if err != nil {
		return nil, err
	}
	p.progress(opts, PhaseScan, res.done.Load(), res.total)
	return res, nil
}

// firstBuckets splits the whole table for the first pass, and estimates
// its rows. A key of one integer column, dense enough, is split by
// arithmetic between its least and greatest values; other keys at keys
// sampled from the larger side.
func (p *pair) firstBuckets(ctx context.Context, opts Options) (buckets, int64, error) {
	var lo, hi int64
	span := false
	rows := max(p.srcInfo.rows, p.dstInfo.rows)
	if p.intKey {
		var err error
		lo, hi, span, err = p.keySpan(ctx)
		if err != nil {
			return buckets{}, 0, err
		}
		if span && p.srcInfo.rows >= 0 && p.dstInfo.rows >= 0 {
			if b, ok := shiftBuckets(lo, hi, rows, opts.MaxBuckets, opts.LeafRows, p.maxShift); ok {
				return b, rows, nil
			}
		}
	}

	// Sample the larger side, so that a range holding only extra (or only
	// missing) rows is split too.
	s, pages := p.src, p.srcInfo.pages
	if p.dstInfo.pages > pages {
		s, pages = p.dst, p.dstInfo.pages
	}
	pct := 0.0
	if pages > 2*samplePages {
		pct = 100 * float64(samplePages) / float64(pages)
	}
	parts := opts.MaxBuckets
	if pct > 0 {
		parts = min(parts, samplePages)
	}
	bounds, n, err := p.walk(ctx, s, keyRange{}, parts, opts.LeafRows, pct)
	if err != nil {
		return buckets{}, 0, err
	}
	if pct > 0 {
		n = int64(float64(n) * 100 / pct)
	}
	if span {
		// Without statistics on both sides, the walk counted the rows.
		if b, ok := shiftBuckets(lo, hi, n, opts.MaxBuckets, opts.LeafRows, p.maxShift); ok {
			return b, n, nil
		}
	}
	return buckets{bounds: bounds}, n, nil
}

// keySpan returns the least and the greatest key of both sides together
// (of the whole table: the source filter may only narrow it); ok is false
// when both sides are empty. The key's unique index answers at once.
func (p *pair) keySpan(ctx context.Context) (lo, hi int64, ok bool, err error) {
	var spans [2][2]pgtype.Int8
	read := func(i int, s *side) func(context.Context) error {
		return func(ctx context.Context) error {
			k := s.keyCols[0]
			err := s.pool.QueryRow(ctx, "SELECT min("+k+")::bigint, max("+k+")::bigint"+s.from()).Scan(&spans[i][0], &spans[i][1])
			if err != nil {
				return fmt.Errorf("read %s key span: %w", s.name, err)
			}
			return nil
		}
	}
	if err := both(ctx, read(0, p.src), read(1, p.dst)); err != nil {
		return 0, 0, false, err
	}
	for _, sp := range spans {
		if !sp[0].Valid {
			continue
		}
		if !ok || sp[0].Int64 < lo {
			lo = sp[0].Int64
		}
		if !ok || sp[1].Int64 > hi {
			hi = sp[1].Int64
		}
		ok = true
	}
	return lo, hi, ok, nil
}

// check compares r, split at bounds, on both sides, narrows down the
// buckets that differ, and returns their differences in key order. The
// buckets of the first pass are narrowed down by opts.Workers at a time.
func (p *pair) check(ctx context.Context, r keyRange, b buckets, opts Options, res *result, depth int) (diffs, error) {
	bounds := b.bounds
	var srcAgg, dstAgg map[int]agg
	err := both(ctx,
		func(ctx context.Context) (err error) { srcAgg, err = p.aggregate(ctx, p.src, r, b); return err },
		func(ctx context.Context) (err error) { dstAgg, err = p.aggregate(ctx, p.dst, r, b); return err })
	if err != nil {
		return diffs{}, err
	}
	if depth == 0 {
		for _, g := range srcAgg {
			res.sourceRows += g.count
		}
		for _, g := range dstAgg {
			res.targetRows += g.count
		}
		res.total = max(res.sourceRows, res.targetRows)
	}
	type task struct {
		sub    keyRange
		sa, da agg
	}
	var tasks []task
	for i := 0; i <= len(bounds); i++ {
		sa, da := srcAgg[i], dstAgg[i]
		if sa.count == 0 {
			sa.sum = "0"
		}
		if da.count == 0 {
			da.sum = "0"
		}
		if sa == da {
			res.done.Add(max(sa.count, da.count))
			continue
		}
		sub := keyRange{lo: r.lo, hi: r.hi}
		if i > 0 {
			sub.lo = bounds[i-1]
		}
		if i < len(bounds) {
			sub.hi = bounds[i]
		}
		tasks = append(tasks, task{sub, sa, da})
	}
	found := make([]diffs, len(tasks))
	g, gctx := errgroup.WithContext(ctx)
	if depth == 0 {
		g.SetLimit(opts.Workers)
	} else {
		g.SetLimit(1)
	}
	for i, t := range tasks {
		g.Go(func() error {
			d, err := p.narrow(gctx, t.sub, t.sa, t.da, opts, res, depth)
			found[i] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return diffs{}, err
	}
	var all diffs
	for _, d := range found {
		all.add(d)
	}
	return all, nil
}

// narrow finds the differences of a range whose aggregates differ: split
// again while it is large, else compared row by row.
func (p *pair) narrow(ctx context.Context, r keyRange, sa, da agg, opts Options, res *result, depth int) (diffs, error) {
	rows := max(sa.count, da.count)
	if rows > int64(opts.LeafRows) && depth < maxDepth {
		s := p.src
		if da.count > sa.count {
			s = p.dst
		}
		parts := min(opts.Fanout, int(rows/int64(opts.LeafRows))+1)
		subBounds, _, err := p.walk(ctx, s, r, parts, opts.LeafRows, 0)
		if err != nil {
			return diffs{}, err
		}
		if len(subBounds) > 0 {
			return p.check(ctx, r, buckets{bounds: subBounds}, opts, res, depth+1)
		}
	}
	d, err := p.leaf(ctx, r)
	if err != nil {
		return diffs{}, err
	}
	p.progress(opts, PhaseBisect, res.done.Add(rows), res.total)
	return d, nil
}

// row is one row of a leaf: its key's text and each column's hash.
type row struct {
	key    []string
	hashes []pgtype.Int8
}

// leaf fetches range r from both sides and compares it row by row.
func (p *pair) leaf(ctx context.Context, r keyRange) (diffs, error) {
	var srcRows, dstRows []row
	err := both(ctx,
		func(ctx context.Context) (err error) { srcRows, err = p.fetchRange(ctx, p.src, r); return err },
		func(ctx context.Context) (err error) { dstRows, err = p.fetchRange(ctx, p.dst, r); return err })
	if err != nil {
		return diffs{}, err
	}
	return compareRows(srcRows, dstRows), nil
}

func (p *pair) rowSelect(s *side) string {
	return "SELECT " + strings.Join(s.keyText, ", ") + ", " + strings.Join(s.colHash, ", ")
}

func (p *pair) fetchRange(ctx context.Context, s *side, r keyRange) ([]row, error) {
	var a args
	q := p.rowSelect(s) + s.from() + p.where(s, r, &a) + " ORDER BY " + strings.Join(s.keyCols, ", ")
	return p.scanRows(ctx, s, q, a)
}

func (p *pair) scanRows(ctx context.Context, s *side, q string, a args) ([]row, error) {
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, fmt.Errorf("read %s rows: %w", s.name, err)
	}
	defer rows.Close()
	var out []row
	nk, nc := len(s.keyText), len(s.colHash)
	for rows.Next() {
		rw := row{key: make([]string, nk), hashes: make([]pgtype.Int8, nc)}
		dest := make([]any, 0, nk+nc)
		for i := range rw.key {
			dest = append(dest, &rw.key[i])
		}
		for i := range rw.hashes {
			dest = append(dest, &rw.hashes[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read %s rows: %w", s.name, err)
		}
		out = append(out, rw)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s rows: %w", s.name, err)
	}
	return out, nil
}

func (p *pair) progress(opts Options, phase Phase, done, total int64) {
	if opts.Progress != nil {
		opts.Progress(Progress{Table: p.table.Target.String(), Phase: phase, Done: min(done, total), Total: total})
	}
}
