package reconcile

import (
	"fmt"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// TestVerifyValueSemanticsIssue15 pins the value comparisons issue 15
// (item 12) found wrong: a composite holding an enum was reported
// different on identical data (and repaired on every run), while a citext
// case change, -0 against 0 and '1 mon' against '30 days' were reported
// equal. For a widening mapping the target must hold the source value as
// PostgreSQL's cast makes it, which is what the first copy and backfill
// write: real 0.1 is 0.10000000149011612 as double precision, and char(n)
// loses its padding as text.
func TestVerifyValueSemanticsIssue15(t *testing.T) {
	cases := []struct {
		name           string
		srcTyp, dstTyp string
		src, dst       string // SQL literals
		equal          bool
	}{
		{"composite holding an enum, same value", "pair", "pair", "ROW('ok', 1)", "ROW('ok', 1)", true},
		{"composite holding an enum, other label", "pair", "pair", "ROW('ok', 1)", "ROW('sad', 1)", false},
		{"array of composites holding an enum", "pair[]", "pair[]", "ARRAY[ROW('ok', 1)::pair]", "ARRAY[ROW('ok', 1)::pair]", true},
		{"range of floats", "floatrange", "floatrange", "floatrange(-0.0::float8, 1)", "floatrange(0, 1)", false},
		{"citext case change", "citext", "citext", "'Straße'", "'straße'", false},
		{"citext same text", "citext", "citext", "'Straße'", "'Straße'", true},
		{"text to citext, case change", "text", "citext", "'Abc'", "'abc'", false},
		{"domain over citext", "ci_d", "ci_d", "'Abc'", "'ABC'", false},
		{"double precision -0 and 0", "double precision", "double precision", "'-0'", "'0'", false},
		{"real -0 and 0", "real", "real", "'-0'", "'0'", false},
		{"double precision same", "double precision", "double precision", "0.1", "0.1", true},
		{"float NaN", "double precision", "double precision", "'NaN'", "'NaN'", true},
		{"float array -0", "float8[]", "float8[]", "'{-0,1}'", "'{0,1}'", false},
		{"interval 1 mon and 30 days", "interval", "interval", "'1 mon'", "'30 days'", false},
		{"interval 1 day and 24 hours", "interval", "interval", "'1 day'", "'24 hours'", false},
		{"interval same fields", "interval", "interval", "'1 mon 2 days 03:00:00'", "'1 mon 2 days 3 hours'", true},
		{"real to double precision: the cast's value", "real", "double precision", "0.1", "0.1::real::float8", true},
		{"real to double precision: the decimal read as double", "real", "double precision", "0.1", "0.1::float8", false},
		{"char(n) to text: the cast's value", "character(4)", "text", "'ab'", "'ab'", true},
		{"char(n) to text: padding kept", "character(4)", "text", "'ab'", "'ab  '", false},
	}
	common := `CREATE EXTENSION citext; CREATE DOMAIN ci_d AS citext;
		CREATE TYPE floatrange AS RANGE (subtype = float8);`
	var srcSQL, dstSQL strings.Builder
	srcSQL.WriteString(common)
	dstSQL.WriteString(common)
	// The target's enum labels get other OIDs than the source's.
	dstSQL.WriteString("CREATE TYPE filler AS ENUM ('x', 'y', 'z');\n")
	for _, b := range []*strings.Builder{&srcSQL, &dstSQL} {
		b.WriteString("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE TYPE pair AS (m mood, n int);\n")
	}
	var specs []mapping.TableSpec
	for i, tc := range cases {
		fmt.Fprintf(&srcSQL, "CREATE TABLE v%d (id int PRIMARY KEY, v %s); INSERT INTO v%d VALUES (1, %s);\n", i, tc.srcTyp, i, tc.src)
		fmt.Fprintf(&dstSQL, "CREATE TABLE v%d (id int PRIMARY KEY, v %s); INSERT INTO v%d VALUES (1, %s);\n", i, tc.dstTyp, i, tc.dst)
		specs = append(specs, mapping.TableSpec{Source: fmt.Sprintf("v%d", i)})
	}
	p := newDBPair(t, srcSQL.String(), dstSQL.String())
	for _, mode := range []HashMode{HashRecord, HashMD5} {
		rep := p.verify(t, Options{Hash: mode}, specs...)
		for i, tc := range cases {
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				var want []string
				if !tc.equal {
					want = []string{"id=1:v"}
				}
				checkDiffs(t, rep.Tables[i], nil, nil, want)
			})
		}
	}

	// Repair writes the source's value; a second run finds nothing to
	// repair, in either hash mode.
	rep := p.verify(t, Options{Repair: true}, specs...)
	for i, tc := range cases {
		want := int64(0)
		if !tc.equal {
			want = 1
		}
		if tr := rep.Tables[i]; tr.Repaired != want || !tr.Consistent {
			t.Errorf("%s: first repair: got repaired %d consistent %v, want %d true", tc.name, tr.Repaired, tr.Consistent, want)
		}
	}
	for _, mode := range []HashMode{HashRecord, HashMD5} {
		rep := p.verify(t, Options{Repair: true, Hash: mode}, specs...)
		for i, tc := range cases {
			if tr := rep.Tables[i]; tr.Repaired != 0 || !tr.Consistent || tr.Mismatched != 0 {
				t.Errorf("%s/%s: second repair: got repaired %d mismatched %d consistent %v, want 0 0 true", mode, tc.name, tr.Repaired, tr.Mismatched, tr.Consistent)
			}
		}
	}
}
