package apply

// Disjoint key spaces for two-way sync (issue 13).
//
// While both the monolith and the service insert rows, a key handed out by
// a sequence on one side must never be handed out on the other: the sync
// would then apply one side's row over the other's, and one of the two
// acknowledged writes would be gone. datasync splits each sequence-backed
// key into two ranges before the first two-way write:
//
//	source (monolith)  [its MINVALUE, B-1]    ALTER SEQUENCE … MAXVALUE B-1
//	target (service)   [B, type maximum]      ALTER SEQUENCE … MINVALUE B START WITH B RESTART WITH R
//
// with B for the narrowest integer type among both key columns and both
// sequences: 2^52 for bigint (so that ids stay exact as JSON numbers read by
// JavaScript, which rounds past 2^53 - 1), 2^30 for integer, 2^14 for
// smallint. The monolith's sequence keeps its position and increments; it
// only gets an upper bound it is far from. The service's sequence jumps to
// R, the first value from B on that no row on either side holds. Ranges
// were chosen over interleaving (odd/even increments) because they leave
// the monolith's ids exactly as they were, survive a sequence's CACHE and
// need no change when one side is retired.
//
// The boundary is recorded in the target's datasync.key_ranges. A table
// without a record is set up (and every change is logged); a table with one
// is only checked, and any way a collision has become possible (a MAXVALUE
// raised or removed, a MINVALUE lowered, a sequence set back below keys that
// exist, a key written in the other side's range) is an error naming the
// sequence and the statement that repairs it. Nothing is changed in either
// database while any table has a problem.
//
// Keys that no sequence hands out need nothing: a composite key, a uuid or
// text key, an integer key the application sets itself. They are reported
// as such.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// ErrKeyCollision is wrapped by the error EnsureDisjointKeys returns when
// ids handed out on one side could be handed out on the other.
var ErrKeyCollision = errors.New("key collision possible")

// KeySpaceError lists every key space problem of every table.
type KeySpaceError struct {
	Problems []string
}

func (e *KeySpaceError) Error() string {
	if len(e.Problems) == 1 {
		return "disjoint keys: " + e.Problems[0]
	}
	return fmt.Sprintf("disjoint keys: %d problems:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func (e *KeySpaceError) Unwrap() error { return ErrKeyCollision }

// Kinds of key space, as in KeySpace.Kind.
const (
	// KeyRanges: at least one side's key comes from a sequence; the
	// sequences are confined to their side's range.
	KeyRanges = "ranges"
	// KeyComposite: a key of several columns; nothing to do.
	KeyComposite = "composite"
	// KeyNotInteger: a uuid, text or other non-integer key; nothing to do.
	KeyNotInteger = "not_integer"
	// KeyApplicationSet: an integer key no sequence hands out on either
	// side; nothing to do.
	KeyApplicationSet = "application_set"
)

// KeySpace is what EnsureDisjointKeys decided for one mapped table.
type KeySpace struct {
	// Source and Target are the tables.
	Source string `json:"source"`
	Target string `json:"target"`
	// Kind is one of KeyRanges, KeyComposite, KeyNotInteger,
	// KeyApplicationSet.
	Kind string `json:"kind"`
	// Boundary is the first value of the target's range (KeyRanges only).
	Boundary int64 `json:"boundary,omitempty"`
	// SourceSequence and TargetSequence are the sequences behind the key
	// column on each side, "" where the application sets the key.
	SourceSequence string `json:"source_sequence,omitempty"`
	TargetSequence string `json:"target_sequence,omitempty"`
}

// KeyChange is one change EnsureDisjointKeys made to a database.
type KeyChange struct {
	// Database is "source" or "target".
	Database string `json:"database"`
	// SQL is the statement run.
	SQL string `json:"sql"`
	// Before and After describe what it changed.
	Before string `json:"before"`
	After  string `json:"after"`
	// Warning, when not empty, is something the operator must do too.
	Warning string `json:"warning,omitempty"`
}

// KeySpaceReport is what EnsureDisjointKeys found and did.
type KeySpaceReport struct {
	Tables  []KeySpace  `json:"tables"`
	Changes []KeyChange `json:"changes"`
}

// SequenceHeadroom is how many values a sequence behind a mapped key has
// left in its side's range.
type SequenceHeadroom struct {
	// Table and Column are the key column, on the side of Database.
	Table  string `json:"table"`
	Column string `json:"column"`
	// Database is "source" or "target".
	Database string `json:"database"`
	// Sequence is the sequence's qualified name.
	Sequence string `json:"sequence"`
	// Min and Max bound the sequence's range; Next is the value it hands
	// out next.
	Min  int64 `json:"min"`
	Max  int64 `json:"max"`
	Next int64 `json:"next"`
	// Left is how many values remain, Next to Max.
	Left int64 `json:"left"`
}

// keyRangesSchema records the boundary chosen for each table.
const keyRangesSchema = `
CREATE SCHEMA IF NOT EXISTS datasync;
CREATE TABLE IF NOT EXISTS datasync.key_ranges (
	target_table text PRIMARY KEY,
	target_column text NOT NULL,
	source_table text NOT NULL,
	source_column text NOT NULL,
	boundary bigint NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);`

// sequence is a sequence's settings and position.
type sequence struct {
	name                 string // quoted, qualified
	bits                 int    // 16, 32 or 64
	start, min, max, inc int64
	cache                int64
	next                 int64 // what nextval returns next, when !exhausted
	exhausted            bool
}

// keySide is one side's key column.
type keySide struct {
	db     string // "source" or "target"
	pool   *pgxpool.Pool
	table  mapping.Ident
	column string
	bits   int
	seq    *sequence // nil: the application sets the key
	// below and above are the greatest keys < and >= the boundary.
	below, above *int64
}

// EnsureDisjointKeys makes the source's and the target's sequence-backed
// keys of every mapped table disjoint, or checks that they still are (see
// the top of this file). Every change is logged, one line each, and
// returned in the report. A table whose keys could collide makes it return
// a *KeySpaceError, before anything is changed.
//
// It is safe after the target's sequences were advanced past the copied
// keys (setval to the greatest key): the target's sequence is moved to its
// range from wherever it stands.
func EnsureDisjointKeys(ctx context.Context, src, dst *pgxpool.Pool, tables []*mapping.Table, log *slog.Logger) (KeySpaceReport, error) {
	if log == nil {
		log = slog.Default()
	}
	rep := KeySpaceReport{Tables: []KeySpace{}, Changes: []KeyChange{}}
	recorded, err := readKeyRanges(ctx, dst)
	if err != nil {
		return rep, err
	}
	type newRecord struct {
		t        *mapping.Table
		boundary int64
	}
	var problems []string
	var records []newRecord
	for _, t := range tables {
		ks, sides, err := classifyKey(ctx, src, dst, t)
		if err != nil {
			return rep, err
		}
		if ks.Kind != KeyRanges {
			rep.Tables = append(rep.Tables, ks)
			continue
		}
		boundary, setUp := recorded[t.Target.Quoted()]
		if !setUp {
			boundary = rangeBoundary(minBits(sides))
		}
		ks.Boundary = boundary
		rep.Tables = append(rep.Tables, ks)
		for _, s := range sides {
			if err := s.readExtents(ctx, boundary); err != nil {
				return rep, err
			}
		}
		// The sequences are read after the keys: a key inserted meanwhile
		// was handed out before the read, so it is below the position read.
		for _, s := range sides {
			if s.seq != nil {
				if err := s.seq.read(ctx, s.pool); err != nil {
					return rep, fmt.Errorf("disjoint keys: %s %s: %w", s.db, t.Target, err)
				}
			}
		}
		var p []string
		var changes []KeyChange
		if setUp {
			p = recheckKeys(t, boundary, sides[0], sides[1])
		} else {
			p, changes = planKeys(t, boundary, sides[0], sides[1])
			records = append(records, newRecord{t, boundary})
		}
		problems = append(problems, p...)
		rep.Changes = append(rep.Changes, changes...)
	}
	if len(problems) > 0 {
		rep.Changes = rep.Changes[:0]
		return rep, &KeySpaceError{Problems: problems}
	}
	for _, ks := range rep.Tables {
		if ks.Kind != KeyRanges {
			log.Info("disjoint keys: nothing to do", "table", ks.Target, "key", keyKindText[ks.Kind])
		}
	}
	for _, c := range rep.Changes {
		pool := src
		if c.Database == "target" {
			pool = dst
		}
		if _, err := pool.Exec(ctx, c.SQL); err != nil {
			return rep, fmt.Errorf("disjoint keys: %s: %s: %w", c.Database, c.SQL, err)
		}
		log.Info("disjoint keys: changed "+c.Database, "sql", c.SQL, "before", c.Before, "after", c.After)
		if c.Warning != "" {
			log.Warn("disjoint keys: " + c.Warning)
		}
	}
	if len(records) > 0 {
		if _, err := dst.Exec(ctx, keyRangesSchema); err != nil {
			return rep, fmt.Errorf("disjoint keys: create datasync.key_ranges in target: %w", err)
		}
	}
	for _, r := range records {
		k := r.t.KeyColumns()[0]
		sql := `INSERT INTO datasync.key_ranges (target_table, target_column, source_table, source_column, boundary)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_table) DO NOTHING`
		if _, err := dst.Exec(ctx, sql, r.t.Target.Quoted(), k.Target, r.t.Source.Quoted(), k.Source, r.boundary); err != nil {
			return rep, fmt.Errorf("disjoint keys: record the range of %s: %w", r.t.Target, err)
		}
		c := KeyChange{Database: "target",
			SQL:    fmt.Sprintf("INSERT INTO datasync.key_ranges (target_table, boundary) VALUES (%s, %d)", mapping.QuoteLiteral(r.t.Target.String()), r.boundary),
			Before: "no key range recorded", After: fmt.Sprintf("source below %d, target from %d", r.boundary, r.boundary)}
		rep.Changes = append(rep.Changes, c)
		log.Info("disjoint keys: changed target", "sql", c.SQL, "before", c.Before, "after", c.After)
	}
	for _, ks := range rep.Tables {
		if ks.Kind == KeyRanges {
			log.Info("disjoint keys", "table", ks.Target, "boundary", ks.Boundary,
				"source_sequence", orNone(ks.SourceSequence), "target_sequence", orNone(ks.TargetSequence))
		}
	}
	return rep, nil
}

var keyKindText = map[string]string{
	KeyComposite:      "composite key",
	KeyNotInteger:     "not an integer key",
	KeyApplicationSet: "integer key set by the application on both sides",
}

func orNone(s string) string {
	if s == "" {
		return "none (set by the application)"
	}
	return s
}

// readKeyRanges returns the recorded boundaries by quoted target table.
func readKeyRanges(ctx context.Context, dst *pgxpool.Pool) (map[string]int64, error) {
	out := map[string]int64{}
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.key_ranges') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("disjoint keys: read target: %w", err)
	}
	if !exists {
		return out, nil
	}
	rows, err := dst.Query(ctx, `SELECT target_table, boundary FROM datasync.key_ranges`)
	if err != nil {
		return nil, fmt.Errorf("disjoint keys: read datasync.key_ranges: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var b int64
		if err := rows.Scan(&table, &b); err != nil {
			return nil, fmt.Errorf("disjoint keys: read datasync.key_ranges: %w", err)
		}
		out[table] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("disjoint keys: read datasync.key_ranges: %w", err)
	}
	return out, nil
}

// intBits is the width of the integer types by OID.
var intBits = map[uint32]int{20: 64, 21: 16, 23: 32}

// classifyKey finds the kind of t's key and, for KeyRanges, both sides.
func classifyKey(ctx context.Context, src, dst *pgxpool.Pool, t *mapping.Table) (KeySpace, [2]*keySide, error) {
	ks := KeySpace{Source: t.Source.String(), Target: t.Target.String()}
	var sides [2]*keySide
	if len(t.Key) != 1 {
		ks.Kind = KeyComposite
		return ks, sides, nil
	}
	k := t.KeyColumns()[0]
	sb, sok := intBits[k.SourceOID]
	db, dok := intBits[k.TargetOID]
	if !sok || !dok {
		ks.Kind = KeyNotInteger
		return ks, sides, nil
	}
	sides[0] = &keySide{db: "source", pool: src, table: t.Source, column: k.Source, bits: sb}
	sides[1] = &keySide{db: "target", pool: dst, table: t.Target, column: k.Target, bits: db}
	for _, s := range sides {
		name, err := ownedSequence(ctx, s.pool, s.table, s.column)
		if err != nil {
			return ks, sides, fmt.Errorf("disjoint keys: %s %s: %w", s.db, s.table, err)
		}
		if name != "" {
			s.seq = &sequence{name: name}
			if err := s.seq.readSettings(ctx, s.pool); err != nil {
				return ks, sides, fmt.Errorf("disjoint keys: %s %s: %w", s.db, s.table, err)
			}
		}
	}
	if sides[0].seq == nil && sides[1].seq == nil {
		ks.Kind = KeyApplicationSet
		return ks, sides, nil
	}
	ks.Kind = KeyRanges
	if sides[0].seq != nil {
		ks.SourceSequence = sides[0].seq.name
	}
	if sides[1].seq != nil {
		ks.TargetSequence = sides[1].seq.name
	}
	return ks, sides, nil
}

// ownedSequence returns the sequence a serial or identity column takes
// its values from (through pg_depend, as pg_get_serial_sequence reads it),
// or "".
func ownedSequence(ctx context.Context, pool *pgxpool.Pool, table mapping.Ident, column string) (string, error) {
	var name *string
	if err := pool.QueryRow(ctx, `SELECT pg_get_serial_sequence($1, $2)`, table.Quoted(), column).Scan(&name); err != nil {
		return "", fmt.Errorf("look up the sequence of %s: %w", column, err)
	}
	if name == nil {
		return "", nil
	}
	return *name, nil
}

func minBits(sides [2]*keySide) int {
	bits := 64
	for _, s := range sides {
		bits = min(bits, s.bits)
		if s.seq != nil {
			bits = min(bits, s.seq.bits)
		}
	}
	return bits
}

func typeMax(bits int) int64 { return int64(1)<<(bits-1) - 1 }

// rangeBoundary is where the target's range begins for a key of the given
// width: 2^(bits-2), except for bigint, where it is 2^52 so that every id
// the monolith can hand out, and the service's first 2^52, stay below 2^53:
// ids are JSON numbers in most APIs, and JavaScript reads an integer past
// 2^53 - 1 rounded.
func rangeBoundary(bits int) int64 {
	if bits == 64 {
		return 1 << 52
	}
	return int64(1) << (bits - 2)
}

var seqBits = map[string]int{"smallint": 16, "integer": 32, "bigint": 64}

func (q *sequence) readSettings(ctx context.Context, pool *pgxpool.Pool) error {
	var typ string
	err := pool.QueryRow(ctx, `SELECT format_type(seqtypid, NULL), seqstart, seqmin, seqmax, seqincrement, seqcache
		FROM pg_sequence WHERE seqrelid = $1::regclass`, q.name).Scan(&typ, &q.start, &q.min, &q.max, &q.inc, &q.cache)
	if err != nil {
		return fmt.Errorf("read sequence %s: %w", q.name, err)
	}
	q.bits = seqBits[typ]
	if q.bits == 0 {
		q.bits = 64
	}
	return nil
}

// read reads the settings and the position.
func (q *sequence) read(ctx context.Context, pool *pgxpool.Pool) error {
	if err := q.readSettings(ctx, pool); err != nil {
		return err
	}
	var last int64
	var called bool
	// The name comes from pg_get_serial_sequence, quoted by the server.
	if err := pool.QueryRow(ctx, `SELECT last_value, is_called FROM `+q.name).Scan(&last, &called); err != nil {
		return fmt.Errorf("read sequence %s: %w", q.name, err)
	}
	q.next, q.exhausted = last, false
	if called {
		if last > q.max-q.inc {
			q.exhausted = true
			q.next = q.max
		} else {
			q.next = last + q.inc
		}
	}
	return nil
}

// left is how many values remain from next to max.
func (q *sequence) left() int64 {
	if q.exhausted || q.next > q.max {
		return 0
	}
	// The difference as unsigned cannot overflow: max >= next.
	d := uint64(q.max) - uint64(q.next)
	if d >= uint64(typeMax(64)) {
		return typeMax(64)
	}
	return int64(d) + 1
}

// readExtents reads the greatest keys below and from the boundary, through
// the key's index.
func (s *keySide) readExtents(ctx context.Context, boundary int64) error {
	col := mapping.QuoteIdent(s.column)
	sql := fmt.Sprintf(`SELECT (SELECT max(%[1]s) FROM %[2]s WHERE %[1]s < $1), (SELECT max(%[1]s) FROM %[2]s WHERE %[1]s >= $1)`,
		col, s.table.Quoted())
	if err := s.pool.QueryRow(ctx, sql, boundary).Scan(&s.below, &s.above); err != nil {
		return fmt.Errorf("disjoint keys: read the keys of %s %s: %w", s.db, s.table, err)
	}
	return nil
}

// greatest returns the greatest non-nil value, or nil.
func greatest(vs ...*int64) *int64 {
	var out *int64
	for _, v := range vs {
		if v != nil && (out == nil || *v > *out) {
			out = v
		}
	}
	return out
}

// whereKey names the side holding key v, for messages.
func whereKey(v int64, src, dst *keySide, above bool) string {
	get := func(s *keySide) *int64 {
		if above {
			return s.above
		}
		return s.below
	}
	if p := get(dst); p != nil && *p == v {
		return "the target's " + dst.table.String()
	}
	return "the source's " + src.table.String()
}

// planKeys checks a table without a recorded range and returns the
// changes that confine each side's sequence to its range.
func planKeys(t *mapping.Table, b int64, src, dst *keySide) (problems []string, changes []KeyChange) {
	name := t.Target.String()
	if q := src.seq; q != nil {
		switch {
		case q.inc <= 0:
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s counts down (INCREMENT %d): only ascending sequences can be split into ranges; make it ascending or set the keys in the application", name, q.name, q.inc))
		case q.min >= b:
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s starts at MINVALUE %d, inside the range from %d the target gets: lower its MINVALUE below %d", name, q.name, q.min, b, b))
		case q.exhausted || q.next >= b:
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s already hands out %d, past %d where the target's range begins: its values already cross the boundary, so the key spaces cannot be split by range; set the keys of one side in the application (and drop its sequence default) before two-way sync", name, q.name, q.next, b-1))
		default:
			if k := greatest(src.below, dst.below); k != nil && *k >= q.next {
				problems = append(problems, fmt.Sprintf("%s: %s already holds key %d, but the source's sequence %s hands out %d next: the source would hand out a key that exists; if the row is on both sides, move the sequence past it on the source (SELECT setval('%s', %d)), else copy it to the source first, then start again",
					name, whereKey(*k, src, dst, false), *k, q.name, q.next, q.name, *k))
			}
			if q.max > b-1 {
				changes = append(changes, KeyChange{Database: "source",
					SQL:    fmt.Sprintf("ALTER SEQUENCE %s MAXVALUE %d", q.name, b-1),
					Before: fmt.Sprintf("%s maxvalue %d, next %d", q.name, q.max, q.next),
					After:  fmt.Sprintf("%s maxvalue %d, next %d", q.name, b-1, q.next)})
			}
		}
	}
	if src.above != nil && dst.seq != nil {
		problems = append(problems, fmt.Sprintf("%s: the source's %s already holds key %d, at or above %d where the target's range begins: existing values cross the boundary; move those rows below %d or set the target's keys in the application", name, src.table, *src.above, b, b))
	}
	if q := dst.seq; q != nil {
		if q.inc <= 0 {
			problems = append(problems, fmt.Sprintf("%s: the target's sequence %s counts down (INCREMENT %d): only ascending sequences can be split into ranges; make it ascending or set the keys in the application", name, q.name, q.inc))
			return problems, changes
		}
		next := max(b, q.next)
		if q.exhausted {
			if q.max >= b {
				problems = append(problems, fmt.Sprintf("%s: the target's sequence %s has handed out every value up to its MAXVALUE %d: the target's range from %d is full", name, q.name, q.max, b))
				return problems, changes
			}
			next = b
		}
		if k := greatest(src.above, dst.above); k != nil && *k >= next {
			if *k == typeMax(64) {
				problems = append(problems, fmt.Sprintf("%s: %s holds key %d: the target's range from %d is full", name, whereKey(*k, src, dst, true), *k, b))
				return problems, changes
			}
			next = *k + 1
		}
		hi := q.max
		if hi < b {
			hi = typeMax(min(q.bits, dst.bits))
		}
		if next > hi {
			problems = append(problems, fmt.Sprintf("%s: the target's sequence %s would start at %d, past its MAXVALUE %d: the target's range is full", name, q.name, next, hi))
			return problems, changes
		}
		var set []string
		if q.min < b {
			set = append(set, fmt.Sprintf("MINVALUE %d", b))
		}
		if hi != q.max {
			set = append(set, fmt.Sprintf("MAXVALUE %d", hi))
		}
		start := q.start
		if q.start < b {
			start = b
			set = append(set, fmt.Sprintf("START WITH %d", b))
		}
		if next != q.next || q.exhausted {
			set = append(set, fmt.Sprintf("RESTART WITH %d", next))
		}
		if len(set) > 0 {
			c := KeyChange{Database: "target",
				SQL:    fmt.Sprintf("ALTER SEQUENCE %s %s", q.name, strings.Join(set, " ")),
				Before: fmt.Sprintf("%s minvalue %d, maxvalue %d, start %d, next %s", q.name, q.min, q.max, q.start, nextText(q)),
				After:  fmt.Sprintf("%s minvalue %d, maxvalue %d, start %d, next %d", q.name, max(q.min, b), hi, start, next)}
			if q.cache > 1 && next != q.next {
				// A session keeps the values it cached before a RESTART.
				c.Warning = fmt.Sprintf("%s has CACHE %d: sessions that took values before the restart hand out their cached ones (below %d) until they reconnect: restart the service's database connections before it takes writes", q.name, q.cache, b)
			}
			changes = append(changes, c)
		}
	}
	return problems, changes
}

func nextText(q *sequence) string {
	if q.exhausted {
		return "none (exhausted)"
	}
	return strconv.FormatInt(q.next, 10)
}

// recheckKeys checks a table whose range was recorded: every way a
// collision can have become possible since, each with the statement that
// repairs it.
func recheckKeys(t *mapping.Table, b int64, src, dst *keySide) []string {
	name := t.Target.String()
	var problems []string
	if b > typeMax(minBits([2]*keySide{src, dst})) {
		problems = append(problems, fmt.Sprintf("%s: the boundary %d recorded in the target's datasync.key_ranges no longer fits the key's type: a key column or sequence was narrowed; widen it back", name, b))
	}
	if q := src.seq; q != nil {
		switch {
		case q.exhausted || q.next >= b:
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s has reached %d, in the target's range from %d: ids handed out there may collide with the target's; find the rows at or above %d on the source, then set the sequence back below %d and run on the source ALTER SEQUENCE %s MAXVALUE %d",
				name, q.name, q.next, b, b, b, q.name, b-1))
		case q.max > b-1:
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s has MAXVALUE %d, above %d where its range ends (was the MAXVALUE removed or raised?): it could hand out the target's ids; run on the source ALTER SEQUENCE %s MAXVALUE %d",
				name, q.name, q.max, b-1, q.name, b-1))
		}
		if k := greatest(src.below, dst.below); k != nil && !q.exhausted && *k >= q.next {
			problems = append(problems, fmt.Sprintf("%s: the source's sequence %s hands out %d next, but %s already holds key %d (was the sequence reset?): run on the source SELECT setval('%s', %d)",
				name, q.name, q.next, whereKey(*k, src, dst, false), *k, q.name, *k))
		}
	}
	if q := dst.seq; q != nil {
		restart := b
		if k := greatest(src.above, dst.above); k != nil {
			restart = max(restart, *k+1)
		}
		switch {
		case q.min < b:
			problems = append(problems, fmt.Sprintf("%s: the target's sequence %s has MINVALUE %d, below %d where its range begins (was it reset or re-created?): it could hand out the source's ids; run on the target ALTER SEQUENCE %s MINVALUE %d START WITH %d RESTART WITH %d",
				name, q.name, q.min, b, q.name, b, b, max(restart, q.next)))
		case !q.exhausted && restart > q.next:
			problems = append(problems, fmt.Sprintf("%s: the target's sequence %s hands out %d next, but %s already holds key %d (was the sequence reset?): run on the target SELECT setval('%s', %d)",
				name, q.name, q.next, whereKey(restart-1, src, dst, true), restart-1, q.name, restart-1))
		}
	}
	return problems
}

// KeyHeadroom reads, for every table whose key range is recorded in the
// target, how many values each side's sequence has left in its range. It
// changes nothing. A target without recorded ranges (no two-way sync) gives
// none.
func KeyHeadroom(ctx context.Context, src, dst *pgxpool.Pool) ([]SequenceHeadroom, error) {
	out := []SequenceHeadroom{}
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.key_ranges') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("key headroom: read target: %w", err)
	}
	if !exists {
		return out, nil
	}
	rows, err := dst.Query(ctx, `SELECT source_table, source_column, target_table, target_column FROM datasync.key_ranges ORDER BY target_table`)
	if err != nil {
		return nil, fmt.Errorf("key headroom: read datasync.key_ranges: %w", err)
	}
	type rec struct{ srcTable, srcCol, dstTable, dstCol string }
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rec, error) {
		var x rec
		err := r.Scan(&x.srcTable, &x.srcCol, &x.dstTable, &x.dstCol)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("key headroom: read datasync.key_ranges: %w", err)
	}
	for _, r := range recs {
		for _, side := range []struct {
			db          string
			pool        *pgxpool.Pool
			table, colm string
		}{{"source", src, r.srcTable, r.srcCol}, {"target", dst, r.dstTable, r.dstCol}} {
			id, err := mapping.ParseIdent(side.table)
			if err != nil {
				return nil, fmt.Errorf("key headroom: %w", err)
			}
			var regclass *string
			if err := side.pool.QueryRow(ctx, `SELECT to_regclass($1)::text`, id.Quoted()).Scan(&regclass); err != nil {
				return nil, fmt.Errorf("key headroom: %s %s: %w", side.db, id, err)
			}
			if regclass == nil {
				continue // the table is gone from this side (retired)
			}
			name, err := ownedSequence(ctx, side.pool, id, side.colm)
			if err != nil {
				return nil, fmt.Errorf("key headroom: %s %s: %w", side.db, id, err)
			}
			if name == "" {
				continue
			}
			q := &sequence{name: name}
			if err := q.read(ctx, side.pool); err != nil {
				return nil, fmt.Errorf("key headroom: %s %s: %w", side.db, id, err)
			}
			out = append(out, SequenceHeadroom{Table: id.String(), Column: side.colm, Database: side.db, Sequence: name,
				Min: q.min, Max: q.max, Next: q.next, Left: q.left()})
		}
	}
	return out, nil
}
