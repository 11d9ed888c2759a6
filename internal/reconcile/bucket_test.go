package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/testkit"
)

// boundIndex is the bucket of key k by the bounds alone: the number of
// bounds at or below it.
func boundIndex(bounds [][]string, k int64) int {
	return sort.Search(len(bounds), func(i int) bool {
		v, err := strconv.ParseInt(bounds[i][0], 10, 64)
		if err != nil {
			panic(err)
		}
		return v > k
	})
}

func TestShiftBuckets(t *testing.T) {
	cases := []struct {
		name                 string
		lo, hi, rows         int64
		maxBuckets, leafRows int
		ok                   bool
		wantShift            uint
		wantBucketsAtMost    int
		wantBucketsAtLeast   int
	}{
		{"dense", 1, 2_000_000, 2_000_000, 1024, 2000, true, 11, 1000, 900},
		{"dense with gaps", 1, 2_000_000, 700_000, 1024, 2000, true, 13, 350, 200},
		{"every third key", 3, 3_000_000, 1_000_000, 1024, 2000, true, 13, 500, 300},
		{"every tenth key", 10, 10_000_000, 1_000_000, 1024, 2000, false, 0, 0, 0},
		{"around zero", -10000, 10000, 20001, 16, 50, true, 11, 16, 8},
		{"one leaf", 1, 100, 100, 1024, 2000, true, 7, 1, 1},
		{"one key", 5, 5, 1, 1024, 2000, true, 0, 1, 1},
		{"top of bigint", math.MaxInt64 - 99_999, math.MaxInt64, 100_000, 64, 100, true, 11, 64, 40},
		{"bottom of bigint", math.MinInt64, math.MinInt64 + 99_999, 100_000, 64, 100, true, 11, 64, 40},
		{"every smallint", math.MinInt16, math.MaxInt16, 65536, 16, 50, true, 12, 16, 16},
		{"whole bigint range", math.MinInt64, math.MaxInt64, 1000, 1024, 2000, false, 0, 0, 0},
		{"whole bigint range, many rows", math.MinInt64, math.MaxInt64, 1 << 40, 1024, 2000, false, 0, 0, 0},
		{"sparse", 1, 5000 * 1_000_000_000_000, 5000, 16, 50, false, 0, 0, 0},
		{"dense block and one far key", 1, 9_000_000_000_000_000_000, 20001, 16, 50, false, 0, 0, 0},
		{"no keys", 10, 1, 0, 16, 50, false, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := shiftBuckets(tc.lo, tc.hi, tc.rows, tc.maxBuckets, tc.leafRows, 62)
			if ok != tc.ok {
				t.Fatalf("got ok %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if !b.byShift || b.shift != tc.wantShift {
				t.Errorf("got byShift %v shift %d, want true %d", b.byShift, b.shift, tc.wantShift)
			}
			if n := len(b.bounds) + 1; n > tc.wantBucketsAtMost || n < tc.wantBucketsAtLeast {
				t.Errorf("got %d buckets, want %d to %d", n, tc.wantBucketsAtLeast, tc.wantBucketsAtMost)
			}
			prev := tc.lo
			for i, bound := range b.bounds {
				v, err := strconv.ParseInt(bound[0], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				if v <= prev || v > tc.hi {
					t.Fatalf("got bound %d = %d after %d, want increasing within (%d, %d]", i, v, prev, tc.lo, tc.hi)
				}
				prev = v
			}
			// The bucket SQL computes (k >> shift); its index must be the
			// bucket whose range holds k, for keys in the span and beyond.
			keys := []int64{tc.lo, tc.hi, math.MinInt64, math.MaxInt64, -1, 0, 1}
			if tc.lo > math.MinInt64 {
				keys = append(keys, tc.lo-1)
			}
			if tc.hi < math.MaxInt64 {
				keys = append(keys, tc.hi+1)
			}
			for _, bound := range b.bounds {
				v, _ := strconv.ParseInt(bound[0], 10, 64)
				keys = append(keys, v-1, v, v+1)
			}
			for _, k := range keys {
				if got, want := b.index(k>>b.shift), boundIndex(b.bounds, k); got != want {
					t.Errorf("key %d: got bucket %d, want %d", k, got, want)
				}
			}
		})
	}
}

// A key of type integer on either side shifts as a C int: by 31 at most.
func TestShiftBucketsMaxShift(t *testing.T) {
	lo, hi, rows := int64(0), int64(1)<<42, int64(1)<<42
	if b, ok := shiftBuckets(lo, hi, rows, 1024, 2000, 62); !ok || b.shift != 33 {
		t.Fatalf("got ok %v shift %d with shifts up to 62, want true 33", ok, b.shift)
	}
	if b, ok := shiftBuckets(lo, hi, rows, 1024, 2000, 31); ok {
		t.Errorf("got buckets by a shift of %d with shifts up to 31, want none", b.shift)
	}
}

func TestAggPlus(t *testing.T) {
	got, err := agg{2, "-9223372036854775808"}.plus(agg{3, "18446744073709551615"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (agg{5, "9223372036854775807"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := (agg{1, "1.5"}).plus(agg{1, "1"}); err == nil {
		t.Errorf("got no error adding a fraction, want one")
	}
}

// firstPassByShift reads the "first pass" debug lines of Verify's JSON log:
// per target table, whether its last first pass numbered its buckets by
// arithmetic.
func firstPassByShift(tb testing.TB, log string) map[string]bool {
	tb.Helper()
	out := map[string]bool{}
	for line := range strings.Lines(log) {
		var rec struct {
			Msg     string `json:"msg"`
			Table   string `json:"table"`
			ByShift bool   `json:"by_shift"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "first pass" {
			out[rec.Table] = rec.ByShift
		}
	}
	return out
}

// Integer keys are bucketed by arithmetic when dense: the first and last
// buckets, keys at the limits of their type, negative keys and keys beyond
// the source's span must all be found; sparse keys keep sampled buckets.
func TestVerifyIntegerKeys(t *testing.T) {
	cases := []struct {
		name, typ, keys string // keys: SQL of a set of keys, k
		src, dst        string // SQL run on each side after loading, t the table
		missing, extra  []string
		mismatched      []string
		byShift         bool
	}{
		{
			name: "keys around zero", typ: "bigint", keys: "generate_series(-10000, 10000) k",
			dst: `DELETE FROM t WHERE id IN (-10000, 0); UPDATE t SET v = 'x' WHERE id IN (10000, -1, 1, 2048, -2049);
				INSERT INTO t VALUES (-10001, 'a'), (10001, 'b');`,
			missing: []string{"id=-10000", "id=0"}, extra: []string{"id=-10001", "id=10001"},
			mismatched: []string{"id=10000:v", "id=-1:v", "id=1:v", "id=2048:v", "id=-2049:v"},
			byShift:    true,
		},
		{
			name: "top of bigint", typ: "bigint", keys: "generate_series(9223372036854755808, 9223372036854775807) k",
			src:     `DELETE FROM t WHERE id = 9223372036854765807`,
			dst:     `DELETE FROM t WHERE id = 9223372036854775807; UPDATE t SET v = 'x' WHERE id = 9223372036854755808`,
			missing: []string{"id=9223372036854775807"}, extra: []string{"id=9223372036854765807"},
			mismatched: []string{"id=9223372036854755808:v"},
			byShift:    true,
		},
		{
			name: "bottom of bigint", typ: "bigint", keys: "generate_series(-9223372036854775808, -9223372036854755809) k",
			dst:     `DELETE FROM t WHERE id = -9223372036854775808; UPDATE t SET v = NULL WHERE id = -9223372036854755809`,
			missing: []string{"id=-9223372036854775808"}, mismatched: []string{"id=-9223372036854755809:v"},
			byShift: true,
		},
		{
			name: "top of integer", typ: "integer", keys: "generate_series(2147463648, 2147483647) k",
			dst:     `DELETE FROM t WHERE id = 2147483647; UPDATE t SET v = '' WHERE id = 2147463648`,
			missing: []string{"id=2147483647"}, mismatched: []string{"id=2147463648:v"},
			byShift: true,
		},
		{
			name: "every smallint", typ: "smallint", keys: "generate_series(-32768, 32767) k",
			dst:     `DELETE FROM t WHERE id IN (-32768, 32767); UPDATE t SET v = 'x' WHERE id = 0`,
			missing: []string{"id=-32768", "id=32767"}, mismatched: []string{"id=0:v"},
			byShift: true,
		},
		{
			name: "sparse keys", typ: "bigint", keys: "generate_series(1, 5000) g, LATERAL (SELECT g * 1000000000000 AS k) s",
			dst: `DELETE FROM t WHERE id = 1000000000000; UPDATE t SET v = 'x' WHERE id = 5000000000000;
				INSERT INTO t VALUES (1, 'a')`,
			missing: []string{"id=1000000000000"}, extra: []string{"id=1"}, mismatched: []string{"id=5000000000000:v"},
		},
		{
			name: "dense keys and one far key", typ: "bigint", keys: "generate_series(1, 20000) k",
			dst:        `INSERT INTO t VALUES (9000000000000000000, 'far'); UPDATE t SET v = 'x' WHERE id IN (1, 20000)`,
			extra:      []string{"id=9000000000000000000"},
			mismatched: []string{"id=1:v", "id=20000:v"},
		},
	}
	var srcSQL, dstSQL strings.Builder
	var specs []mapping.TableSpec
	table := func(i int, sql string) string { return strings.ReplaceAll(sql, " t ", fmt.Sprintf(" t%d ", i)) }
	for i, tc := range cases {
		ddl := fmt.Sprintf("CREATE TABLE t%d (id %s PRIMARY KEY, v text); INSERT INTO t%d SELECT k, 'v' || k FROM %s;\n", i, tc.typ, i, tc.keys)
		srcSQL.WriteString(ddl + table(i, tc.src) + ";\n")
		dstSQL.WriteString(ddl + table(i, tc.dst) + ";\n")
		specs = append(specs, mapping.TableSpec{Source: fmt.Sprintf("t%d", i)})
	}
	p := newDBPair(t, srcSQL.String(), dstSQL.String())
	for _, stats := range []string{"without statistics", "analyzed"} {
		if stats == "analyzed" {
			execSQL(t, p.src, "ANALYZE")
			execSQL(t, p.dst, "ANALYZE")
		}
		for _, o := range []struct {
			name string
			opts Options
		}{{"deep bisection", smallRanges}, {"defaults", Options{}}} {
			var log testkit.Buffer
			opts := o.opts
			opts.Logger = slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
			rep := p.verify(t, opts, specs...)
			byShift := firstPassByShift(t, log.String())
			for i, tc := range cases {
				t.Run(stats+"/"+o.name+"/"+tc.name, func(t *testing.T) {
					checkDiffs(t, rep.Tables[i], tc.missing, tc.extra, tc.mismatched)
					if got := byShift[rep.Tables[i].Target]; got != tc.byShift {
						t.Errorf("got first pass by arithmetic %v, want %v", got, tc.byShift)
					}
				})
			}
		}
	}
}

// A row inserted after the first pass read the key span falls beyond the
// bounds: it must count in the first or the last bucket, which are open.
func TestFirstPassKeysBeyondTheSpan(t *testing.T) {
	ddl := `CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t SELECT k, 'v' || k FROM generate_series(1, 5000) k;`
	p := newDBPair(t, ddl, ddl)
	execSQL(t, p.dst, `DELETE FROM t WHERE id = 1; UPDATE t SET v = 'x' WHERE id IN (2, 4999); INSERT INTO t VALUES (6000, 'new')`)
	ctx := context.Background()
	tables, err := mapping.ResolveAll(ctx, p.src, p.dst, []mapping.TableSpec{{Source: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := newPair(ctx, p.src, p.dst, tables[0], HashAuto)
	if err != nil {
		t.Fatal(err)
	}
	// As if the table held only the keys 2000 to 3000 when the span was
	// read.
	b, ok := shiftBuckets(2000, 3000, 1001, 8, 50, 62)
	if !ok {
		t.Fatal("got no buckets by arithmetic for 2000..3000")
	}
	res := &result{}
	d, err := pair.check(ctx, keyRange{}, b, Options{LeafRows: 50, Fanout: 4}.withDefaults(), res, 0)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(ks [][]string) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = k[0]
		}
		slices.Sort(out)
		return out
	}
	var mismatched [][]string
	for _, m := range d.mismatched {
		mismatched = append(mismatched, m.key)
	}
	got := [3][]string{keys(d.missing), keys(d.extra), keys(mismatched)}
	want := [3][]string{{"1"}, {"6000"}, {"2", "4999"}}
	for i := range got {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("got (missing, extra, mismatched) %v, want %v", got, want)
			break
		}
	}
	if res.sourceRows != 5000 || res.targetRows != 5000 {
		t.Errorf("got rows %d/%d, want 5000/5000", res.sourceRows, res.targetRows)
	}
}

func TestRowEstimate(t *testing.T) {
	cases := []struct {
		name             string
		tuples           float64
		statPages, pages int64
		want             int64
	}{
		{"empty table", -1, 0, 0, 0},
		{"never vacuumed or analyzed", -1, 0, 10, -1},
		{"analyzed empty, since filled", 0, 0, 10, -1},
		{"grown since analyzed", 1000, 10, 25, 2500},
		{"as analyzed", 2000000, 25213, 25213, 2000000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := rowEstimate(tc.tuples, tc.statPages, tc.pages); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}
