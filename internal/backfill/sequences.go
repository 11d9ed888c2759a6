package backfill

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// SequenceAdvance is one target sequence moved past the values a copy wrote.
type SequenceAdvance struct {
	// Table and Column are the target column the sequence fills.
	Table  mapping.Ident
	Column string
	// Sequence is the sequence's schema-qualified name, quoted as needed.
	Sequence string
	// From and To are the value nextval would have returned before, and
	// returns now.
	From, To int64
}

// DB is what AdvanceSequences needs of the target: *pgxpool.Pool, *pgx.Conn
// and pgx.Tx qualify.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// targetSequencesSQL finds the sequences that fill the named columns of a
// table: identity and serial columns own theirs (pg_depend 'i' and 'a'), a
// column DEFAULT nextval('s') depends on s through its default.
const targetSequencesSQL = `SELECT a.attname::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname), q.seqincrement
	FROM pg_attribute a
	JOIN LATERAL (
		SELECT d.objid AS seq FROM pg_depend d
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
			AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i')
		UNION
		SELECT d.refobjid FROM pg_attrdef ad
		JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
		WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	) s ON true
	JOIN pg_class c ON c.oid = s.seq AND c.relkind = 'S'
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_sequence q ON q.seqrelid = c.oid
	WHERE a.attrelid = $1::regclass AND a.attname = ANY ($2) AND NOT a.attisdropped
	ORDER BY a.attnum, 2`

// AdvanceSequences moves every sequence that fills a mapped integer target
// column (GENERATED … AS IDENTITY, serial, or DEFAULT nextval) past the
// values the column holds: to its greatest value for an ascending sequence,
// its least for a descending one. Rows copied from the source carry their
// own keys, so the sequences never moved; without this the first insert
// after cutover would take a key that exists (issue 15, item 10). A
// sequence already past those values is left alone, never moved back. It
// returns the sequences it moved.
//
// Two-way sync must not call it: there each side's sequences hand out a
// range of their own, and the other side's keys are expected in the table.
func AdvanceSequences(ctx context.Context, db DB, tables []*mapping.Table) ([]SequenceAdvance, error) {
	var out []SequenceAdvance
	for _, t := range tables {
		var cols []string
		for _, c := range t.Columns {
			if integerTypes[c.TargetType] {
				cols = append(cols, c.Target)
			}
		}
		if len(cols) == 0 {
			continue
		}
		rows, err := db.Query(ctx, targetSequencesSQL, t.Target.Quoted(), cols)
		if err != nil {
			return out, fmt.Errorf("find the sequences of %s: %w", t.Target, err)
		}
		type seqCol struct {
			col, seq string
			inc      int64
		}
		found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seqCol, error) {
			var s seqCol
			err := r.Scan(&s.col, &s.seq, &s.inc)
			return s, err
		})
		if err != nil {
			return out, fmt.Errorf("find the sequences of %s: %w", t.Target, err)
		}
		for _, s := range found {
			agg := "max"
			if s.inc < 0 {
				agg = "min"
			}
			// One statement: the bound, the sequence's next value, and
			// setval only when the next value is not past the bound.
			var from, to *int64
			err := db.QueryRow(ctx, `WITH b AS (SELECT `+agg+`(`+mapping.QuoteIdent(s.col)+`)::bigint AS v FROM `+t.Target.Quoted()+`),
				n AS (SELECT CASE WHEN is_called THEN last_value + $2 ELSE last_value END AS next FROM `+s.seq+`)
				SELECT n.next, CASE WHEN b.v IS NOT NULL AND (($2 > 0 AND n.next <= b.v) OR ($2 < 0 AND n.next >= b.v))
					THEN setval($1::regclass, b.v, true) + $2 END
				FROM b, n`, s.seq, s.inc).Scan(&from, &to)
			if err != nil {
				return out, fmt.Errorf("advance sequence %s of %s.%s: %w", s.seq, t.Target, s.col, err)
			}
			if to != nil {
				out = append(out, SequenceAdvance{Table: t.Target, Column: s.col, Sequence: s.seq, From: *from, To: *to})
			}
		}
	}
	return out, nil
}
