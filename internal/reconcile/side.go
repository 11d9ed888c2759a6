package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// side is one database's view of a mapped table: the SQL expressions that
// read its keys and values in the target's types.
type side struct {
	name string // "source" or "target"
	pool *pgxpool.Pool
	rel  string // quoted table
	// filter is the source row filter, or "".
	filter string
	// keyCols are the key columns as compared in range predicates: the raw
	// column, so its index serves, compared with parameters cast to the
	// target's type.
	keyCols []string
	// keyText reads each key column as text in the target's type.
	keyText []string
	// values reads each mapped column in the target's type.
	values []string
	// rowHash hashes a row's canonical form to a bigint.
	rowHash string
	// colHash hashes each column's canonical form; NULL for NULL.
	colHash []string
}

// pair is a table mapping with both sides ready to be queried.
type pair struct {
	table    *mapping.Table
	mode     HashMode
	src, dst *side
	// keyCols are the key columns (target side names and types).
	keyCols []mapping.Column
	// keyTypes are the target types of the key columns, for casts.
	keyTypes []string
	// colNames are the target column names in order.
	colNames []string
	// srcInfo and dstInfo size each side's table, to plan the first pass.
	srcInfo, dstInfo tableInfo
	// intKey reports a key of one integer column on both sides, whose
	// first pass can number buckets by arithmetic.
	intKey bool
	// maxShift is the largest shift of the key that means what it says:
	// PostgreSQL shifts integer and smallint values as C ints, whose
	// shifts by 32 or more are undefined.
	maxShift uint
}

// newPair prepares the queries of both sides of t: it picks the hash mode
// by server version, finds which column types have an extended hash, and
// whether text keys must be compared by bytes.
func newPair(ctx context.Context, src, dst *pgxpool.Pool, t *mapping.Table, mode HashMode) (*pair, error) {
	p := &pair{table: t, keyCols: t.KeyColumns()}
	for _, c := range p.keyCols {
		p.keyTypes = append(p.keyTypes, c.TargetType)
	}
	for _, c := range t.Columns {
		p.colNames = append(p.colNames, c.Target)
	}
	if len(p.keyCols) == 1 {
		k := p.keyCols[0]
		p.intKey = isInteger(k.SourceOID) && isInteger(k.TargetOID)
		p.maxShift = 31
		if k.SourceOID == oidInt8 && k.TargetOID == oidInt8 {
			p.maxShift = 62
		}
	}
	err := both(ctx,
		func(ctx context.Context) (err error) {
			p.srcInfo, err = serverInfo(ctx, src, t.Source)
			return err
		},
		func(ctx context.Context) (err error) {
			p.dstInfo, err = serverInfo(ctx, dst, t.Target)
			return err
		})
	if err != nil {
		return nil, err
	}
	record := p.srcInfo.version >= 140000 && p.dstInfo.version >= 140000
	switch mode {
	case HashAuto:
		mode = HashMD5
		if record {
			mode = HashRecord
		}
	case HashRecord:
		if !record {
			return nil, fmt.Errorf("%w: %s needs PostgreSQL 14 or later on both sides", ErrHashMode, mode)
		}
	case HashMD5:
	default:
		return nil, fmt.Errorf("%w: %q", ErrHashMode, mode)
	}
	p.mode = mode

	hashable := make([]bool, len(t.Columns))
	if mode == HashRecord {
		byType := map[string]bool{}
		for _, c := range t.Columns {
			if _, done := byType[c.TargetType]; done {
				continue
			}
			var srcOK, dstOK bool
			err := both(ctx,
				func(ctx context.Context) (err error) {
					srcOK, err = hasExtendedHash(ctx, src, c.TargetType)
					return err
				},
				func(ctx context.Context) (err error) {
					dstOK, err = hasExtendedHash(ctx, dst, c.TargetType)
					return err
				})
			if err != nil {
				return nil, err
			}
			byType[c.TargetType] = srcOK && dstOK
		}
		for i, c := range t.Columns {
			hashable[i] = byType[c.TargetType]
		}
	}
	collatable, err := collatableColumns(ctx, dst, t.Columns)
	if err != nil {
		return nil, err
	}

	p.src = &side{name: "source", pool: src, rel: t.Source.Quoted(), filter: t.Where}
	p.dst = &side{name: "target", pool: dst, rel: t.Target.Quoted()}
	for _, c := range t.Columns {
		p.src.values = append(p.src.values, c.SourceExpr())
		p.dst.values = append(p.dst.values, mapping.QuoteIdent(c.Target))
	}
	for _, k := range t.Key {
		c := t.Columns[k]
		p.src.keyCols = append(p.src.keyCols, mapping.QuoteIdent(c.Source))
		p.dst.keyCols = append(p.dst.keyCols, mapping.QuoteIdent(c.Target))
		p.src.keyText = append(p.src.keyText, "("+c.SourceExpr()+")::text")
		p.dst.keyText = append(p.dst.keyText, mapping.QuoteIdent(c.Target)+"::text")
	}
	for _, s := range []*side{p.src, p.dst} {
		s.rowHash, s.colHash = hashExprs(mode, t.Columns, s.values, hashable, collatable)
	}

	// Range predicates are evaluated by each database under its own
	// collation; when a text key's collations differ, both sides must
	// order by bytes, or a row would fall in different ranges.
	var srcColl, dstColl []string
	err = both(ctx,
		func(ctx context.Context) (err error) {
			srcColl, err = keyCollations(ctx, src, t.Source, keyNames(p.keyCols, true))
			return err
		},
		func(ctx context.Context) (err error) {
			dstColl, err = keyCollations(ctx, dst, t.Target, keyNames(p.keyCols, false))
			return err
		})
	if err != nil {
		return nil, err
	}
	for i := range p.keyCols {
		if srcColl[i] != dstColl[i] && srcColl[i] != "" && dstColl[i] != "" {
			p.src.keyCols[i] += ` COLLATE "C"`
			p.dst.keyCols[i] += ` COLLATE "C"`
		}
	}
	return p, nil
}

func keyNames(cols []mapping.Column, source bool) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Target
		if source {
			out[i] = c.Source
		}
	}
	return out
}

// keyCollations returns, per key column of rel, the collation its
// comparisons use ("" for types without one), resolving the database
// default to the database's locale.
func keyCollations(ctx context.Context, db *pgxpool.Pool, rel mapping.Ident, names []string) ([]string, error) {
	out := make([]string, len(names))
	for i, name := range names {
		err := db.QueryRow(ctx, `SELECT CASE WHEN a.attcollation = 0 THEN ''
				WHEN c.collname = 'default' THEN 'default:' || d.datcollate
				ELSE n.nspname || '.' || c.collname || ':' || coalesce(c.collcollate, '') END
			FROM pg_attribute a
			LEFT JOIN pg_collation c ON c.oid = a.attcollation
			LEFT JOIN pg_namespace n ON n.oid = c.collnamespace
			JOIN pg_database d ON d.datname = current_database()
			WHERE a.attrelid = $1::regclass AND a.attname = $2`, rel.Quoted(), name).Scan(&out[i])
		if err != nil {
			return nil, fmt.Errorf("read collation of %s.%s: %w", rel, name, err)
		}
	}
	return out, nil
}

// tableInfo is what the first pass needs to know of a side's server and
// table.
type tableInfo struct {
	version int   // server_version_num
	pages   int64 // the table's size in pages
	// rows estimates the table's rows, the way the planner does, from the
	// statistics and the current size; -1 when the table has never been
	// vacuumed or analyzed.
	rows int64
}

// serverInfo reads the server's version and the size of table rel.
func serverInfo(ctx context.Context, db *pgxpool.Pool, rel mapping.Ident) (tableInfo, error) {
	var v, tz string
	var info tableInfo
	var tuples float64
	var statPages int64
	err := db.QueryRow(ctx, `SELECT current_setting('server_version_num'), current_setting('TimeZone'),
			pg_relation_size(c.oid) / current_setting('block_size')::int, c.reltuples, c.relpages
			FROM pg_class c WHERE c.oid = $1::regclass`, rel.Quoted()).Scan(&v, &tz, &info.pages, &tuples, &statPages)
	if err != nil {
		return info, fmt.Errorf("read server version and size of %s: %w", rel, err)
	}
	if tz != "UTC" {
		return info, fmt.Errorf("session TimeZone is %s: %w", tz, ErrSession)
	}
	info.version, err = strconv.Atoi(v)
	if err != nil {
		return info, fmt.Errorf("server version %q: %w", v, err)
	}
	info.rows = rowEstimate(tuples, statPages, info.pages)
	return info, nil
}

// rowEstimate scales the rows counted when the table was last vacuumed or
// analyzed, tuples in statPages pages, to its current size in pages; -1
// when there is no count (reltuples is -1 from PostgreSQL 14 on, and 0 in
// 0 pages before).
func rowEstimate(tuples float64, statPages, pages int64) int64 {
	switch {
	case pages == 0:
		return 0
	case tuples < 0 || statPages == 0:
		return -1
	default:
		return int64(math.Round(tuples / float64(statPages) * float64(pages)))
	}
}

// sqlstateUndefinedFunction is the SQLSTATE of "could not identify an
// extended hash function".
const sqlstateUndefinedFunction = "42883"

// hasExtendedHash reports whether typ has an extended hash function that
// tells apart every two values verify must tell apart, by asking
// hash_record_extended to hash a NULL of the type: it looks up every
// field's hash function before it looks at the values. A type it reports
// false for is compared by its text form, byte for byte.
//
// Some hash functions hash values alike that are equal to PostgreSQL's
// operators but different values as stored (issue 15), so a type that is
// or holds one of these, through domains, arrays, composite types and
// ranges, reports false:
//   - an enum value hashes as its label's OID, which differs between two
//     databases that have the same labels;
//   - real and double precision hash -0 like 0;
//   - interval hashes '1 mon' like '30 days', where its fields differ;
//   - a base type of an extension may hash by a looser equality than its
//     bytes: citext hashes 'A' like 'a'.
func hasExtendedHash(ctx context.Context, db *pgxpool.Pool, typ string) (bool, error) {
	var byText bool
	err := db.QueryRow(ctx, `WITH RECURSIVE parts(oid) AS (
			SELECT $1::regtype::oid
			UNION
			SELECT x.oid FROM parts p JOIN pg_type t ON t.oid = p.oid, LATERAL (
				SELECT t.typbasetype WHERE t.typtype = 'd'
				UNION ALL SELECT t.typelem WHERE t.typelem <> 0
				UNION ALL SELECT a.atttypid FROM pg_attribute a
					WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
				UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid OR r.rngmultitypid = t.oid
			) x(oid))
		SELECT coalesce(bool_or(t.typtype = 'e' OR t.oid IN (700, 701, 1186) OR (t.typtype = 'b' AND t.oid >= 16384)), false)
		FROM parts p JOIN pg_type t ON t.oid = p.oid`, typ).Scan(&byText)
	if err != nil {
		return false, fmt.Errorf("probe hash function of type %s: %w", typ, err)
	}
	if byText {
		return false, nil
	}
	var h int64
	err = db.QueryRow(ctx, "SELECT hash_record_extended(ROW(NULL::"+typ+"), 0)").Scan(&h)
	if err == nil {
		return true, nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateUndefinedFunction {
		return false, nil
	}
	return false, fmt.Errorf("probe hash function of type %s: %w", typ, err)
}

// collatableColumns reports which columns' (target) types take a
// collation.
func collatableColumns(ctx context.Context, db *pgxpool.Pool, cols []mapping.Column) ([]bool, error) {
	oids := make([]uint32, len(cols))
	for i, c := range cols {
		oids[i] = c.TargetOID
	}
	var out []bool
	err := db.QueryRow(ctx, `SELECT array_agg(coalesce(t.typcollation <> 0, false) ORDER BY o.n)
		FROM unnest($1::oid[]) WITH ORDINALITY AS o(oid, n) LEFT JOIN pg_type t ON t.oid = o.oid`, oids).Scan(&out)
	if err != nil {
		return nil, fmt.Errorf("read collatable column types: %w", err)
	}
	return out, nil
}

// hashExprs builds the row hash and the per-column hashes over the value
// expressions of one side.
func hashExprs(mode HashMode, cols []mapping.Column, values []string, hashable, collatable []bool) (row string, perCol []string) {
	canon := make([]string, len(values))
	switch mode {
	case HashRecord:
		var parts, rest []string
		for i, v := range values {
			canon[i] = v
			if collatable[i] {
				// A nondeterministic collation hashes equal strings
				// ('a' and 'A' when case-insensitive) alike; "C" hashes
				// the bytes.
				canon[i] = "(" + v + `) COLLATE "C"`
			}
			if !hashable[i] {
				// No extended hash for the type: hash its text form,
				// byte for byte.
				canon[i] = "(" + v + `)::text COLLATE "C"`
			}
			perCol = append(perCol, fmt.Sprintf("CASE WHEN num_nulls(%s) = 1 THEN NULL ELSE hash_record_extended(ROW(%s), 0) END", v, canon[i]))
			if fn, ok := directHash[cols[i].TargetOID]; ok && hashable[i] {
				// Seed i+1 makes each column's hash its own function,
				// so values swapped between columns do not cancel out;
				// a NULL hashes to a constant of its own.
				arg := canon[i]
				if fn.arg != "" {
					arg = fmt.Sprintf(fn.arg, arg)
				}
				seed := strconv.Itoa(i + 1)
				if fn.seed != nil {
					seed = fn.seed(arg, i, cols[i])
				}
				h := fmt.Sprintf("%s(%s, %s)", fn.name, arg, seed)
				perCol[i] = h // strict: NULL for NULL
				parts = append(parts, fmt.Sprintf("coalesce(%s, %d)", h, scramble(i, classNull)))
			} else {
				rest = append(rest, canon[i])
			}
		}
		if len(rest) > 0 {
			parts = append(parts, "hash_record_extended(ROW("+strings.Join(rest, ", ")+"), 0)")
		}
		return "(" + strings.Join(parts, " # ") + ")", perCol
	default:
		for i, v := range values {
			canon[i] = v
			if isNumeric(cols[i].TargetType) {
				// Text of a numeric keeps its scale: 1.50 must hash like 1.5.
				canon[i] = fmt.Sprintf(`regexp_replace(regexp_replace((%s)::text, '(\.[0-9]*[1-9])0+$', '\1'), '\.0+$', '')`, v)
			}
			perCol = append(perCol, md5Bigint("("+canon[i]+")::text"))
		}
		return md5Bigint("ROW(" + strings.Join(canon, ", ") + ")::text"), perCol
	}
}

// directHash names the extended hash function, the one its type's default
// hash operator class uses, of the built-in types whose values the row hash
// hashes with a direct call instead of through a row value: building a row
// per table row and taking it apart again costs more than the hashing.
//
// arg, when set, is a format (%s the value) that makes the function's
// argument: timestamptz's operator class hashes with the timestamp
// function, which SQL can only call on a timestamp. AT TIME ZONE with a
// zero interval gives the timestamp of the same UTC wall clock, every
// microsecond and the infinities kept, whatever the session's TimeZone; it
// is plain arithmetic, where a cast to timestamp converts through the
// session's time zone rules at several times the cost.
//
// Two of these functions drop a part of the value, so seed, when set,
// returns the seed that mixes the part back in, given the argument and the
// column: hashint8extended folds the high half of a bigint onto the low
// half (1 and 4294967296 hash alike), and hash_numeric_extended ignores the
// sign (see numericSeed). A bigint's seeds stay apart between columns: a
// column's own seeds are its position plus multiples of 2048, more than a
// table's columns.
var directHash = map[uint32]struct {
	name, arg string
	seed      func(arg string, i int, c mapping.Column) string
}{
	20:   {"hashint8extended", "", bigintSeed},                               // bigint
	21:   {"hashint2extended", "", nil},                                      // smallint
	23:   {"hashint4extended", "", nil},                                      // integer
	25:   {"hashtextextended", "", nil},                                      // text
	1043: {"hashtextextended", "", nil},                                      // character varying
	1114: {"timestamp_hash_extended", "", nil},                               // timestamp without time zone
	1184: {"timestamp_hash_extended", "(%s) AT TIME ZONE INTERVAL '0'", nil}, // timestamp with time zone
	1700: {"hash_numeric_extended", "", numericSeed},                         // numeric
	2950: {"uuid_hash_extended", "", nil},                                    // uuid
}

func bigintSeed(arg string, i int, _ mapping.Column) string {
	return fmt.Sprintf("(((%s) >> 32) << 11) + %d", arg, i+1)
}

// numericSeed picks hash_numeric_extended's seed by the class of the value.
// The function ignores the sign, and returns its seed unchanged for NaN and
// both infinities, and the seed minus one for zero: negative values (minus
// infinity among them), the other finite ones, infinity and NaN each get a
// seed of their own, scrambled, so that these returned constants are
// unrelated to each other and to the constants that stand for NULL, and an
// XOR of a few of them cannot cancel another. A type modifier on both sides
// rules out infinities, and one comparison tells the classes apart.
func numericSeed(arg string, i int, c mapping.Column) string {
	neg, other := scramble(i, classNegative), scramble(i, classFinite)
	if hasTypmod(c.SourceType) && hasTypmod(c.TargetType) {
		return fmt.Sprintf("CASE WHEN (%s) < 0 THEN %d ELSE %d END", arg, neg, other)
	}
	return fmt.Sprintf("CASE WHEN (%[1]s) < 0 THEN %[2]d WHEN (%[1]s) < 'Infinity'::numeric THEN %[3]d "+
		"WHEN (%[1]s) = 'Infinity'::numeric THEN %[4]d ELSE %[5]d END",
		arg, neg, other, scramble(i, classInfinity), scramble(i, classNaN))
}

// Classes of a column's values that scramble makes constants for.
const (
	classNull = iota
	classFinite
	classNegative
	classInfinity
	classNaN
)

// scramble returns a 64-bit constant for column i and a class of its
// values: splitmix64's finalizer over both, so that any two give unrelated
// constants.
func scramble(i, class int) int64 {
	x := uint64(i)<<3 | uint64(class)
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return int64(x ^ x>>31)
}

// hasTypmod reports whether a type as format_type prints it has a type
// modifier: numeric(12,2), not numeric.
func hasTypmod(typ string) bool { return strings.Contains(typ, "(") }

func md5Bigint(textExpr string) string {
	return "('x' || left(md5(" + textExpr + "), 16))::bit(64)::bigint"
}

// isInteger reports whether oid is smallint, integer or bigint.
func isInteger(oid uint32) bool { return oid == oidInt2 || oid == oidInt4 || oid == oidInt8 }

func isNumeric(typ string) bool {
	return typ == "numeric" || strings.HasPrefix(typ, "numeric(")
}

// from is the FROM clause of the side's table.
func (s *side) from() string { return " FROM " + s.rel }

// both runs f and g at the same time and returns the error that came
// first. The first failure cancels the other call, so the other call's
// error is most often just "context canceled": reporting it would hide the
// cause.
func both(ctx context.Context, f, g func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once  sync.Once
		first error
	)
	fail := func(err error) {
		if err != nil {
			once.Do(func() {
				first = err
				cancel()
			})
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fail(g(ctx))
	}()
	fail(f(ctx))
	<-done
	return first
}

// sessionParams make text forms exact and equal on both sides: the
// settings every datasync connection pins (times in UTC, ISO dates, floats
// with all their digits), and JIT off because compiling the bucket trees
// costs more than it saves.
func sessionParams() map[string]string {
	p := dbconn.Settings()
	p["jit"] = "off"
	p["application_name"] = "datasync-verify"
	return p
}

// Connect opens a connection pool to url with the session settings Verify
// relies on. Pools passed to Verify must come from Connect or be configured
// with ConfigurePool.
func Connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := dbconn.PoolConfig("database", url, "")
	if err != nil {
		return nil, err
	}
	ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.ConnConfig.Host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// ConfigurePool sets the session settings Verify relies on in cfg.
func ConfigurePool(cfg *pgxpool.Config) {
	for k, v := range sessionParams() {
		if _, set := cfg.ConnConfig.RuntimeParams[k]; !set || k != "application_name" {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
}
