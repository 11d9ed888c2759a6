package apply

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// planTable maps source public.users (id, mail, body) to target
// app.people (id, email, body), keyed on id.
func planTable() *mapping.Table {
	return &mapping.Table{
		Source: mapping.Ident{Schema: "public", Name: "users"},
		Target: mapping.Ident{Schema: "app", Name: "people"},
		Columns: []mapping.Column{
			{Source: "id", Target: "id", SourceType: "bigint", TargetType: "bigint", SourceOID: 20, TargetOID: 20, Key: true},
			{Source: "mail", Target: "email", SourceType: "text", TargetType: "text", SourceOID: 25, TargetOID: 25},
			{Source: "body", Target: "body", SourceType: "text", TargetType: "text", SourceOID: 25, TargetOID: 25},
		},
		Key: []int{0},
	}
}

// planRelation publishes the columns in another order, with one unmapped.
func planRelation() *cdc.Relation {
	return &cdc.Relation{ID: 1, Namespace: "public", Name: "users", ReplicaIdentity: 'd', Columns: []cdc.Column{
		{Name: "body", TypeOID: 25}, {Name: "extra", TypeOID: 23}, {Key: true, Name: "id", TypeOID: 20}, {Name: "mail", TypeOID: 25},
	}}
}

func txt(s string) cdc.Value { return cdc.Value{Kind: cdc.ValueText, Data: []byte(s)} }

var (
	null      = cdc.Value{Kind: cdc.ValueNull}
	unchanged = cdc.Value{Kind: cdc.ValueUnchanged}
)

func TestCompileDrift(t *testing.T) {
	tests := []struct {
		name       string
		change     func(*cdc.Relation)
		wantChange string
	}{
		{name: "fits", change: func(*cdc.Relation) {}},
		{name: "mapped column gone", change: func(r *cdc.Relation) { r.Columns = r.Columns[1:] }, wantChange: `"body" is no longer published`},
		{name: "mapped column renamed", change: func(r *cdc.Relation) { r.Columns[3].Name = "email" }, wantChange: `"mail" is no longer published`},
		{name: "type changed", change: func(r *cdc.Relation) { r.Columns[2].TypeOID = 23 }, wantChange: `"id" changed type from bigint (oid 20) to oid 23`},
		{name: "unmapped column changed", change: func(r *cdc.Relation) { r.Columns[1].TypeOID = 25 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rel := planRelation()
			tc.change(rel)
			_, err := compile(planTable(), rel)
			if tc.wantChange == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			var drift *DriftError
			if !errors.As(err, &drift) || !errors.Is(err, ErrSchemaDrift) || drift.Table != "public.users" || !strings.Contains(drift.Change, tc.wantChange) {
				t.Fatalf("got %v, want a drift error on public.users containing %q", err, tc.wantChange)
			}
		})
	}
}

func TestPlanQueue(t *testing.T) {
	const upsert = `INSERT INTO "app"."people" ("id", "email", "body") VALUES ($1::text::bigint, $2::text::text, $3::text::text) ON CONFLICT ("id") DO UPDATE SET "email" = EXCLUDED."email", "body" = EXCLUDED."body"`
	const del = `DELETE FROM "app"."people" WHERE "id" = $1::text::bigint`
	// New rows in the relation's column order: body, extra, id, mail.
	tests := []struct {
		name    string
		change  cdc.Change
		want    []string
		wantErr bool
	}{
		{
			name:   "insert with null",
			change: cdc.Change{Op: cdc.OpInsert, New: cdc.Tuple{txt("b"), txt("9"), txt("1"), null}},
			want:   []string{upsert + " [1 <nil> b]"},
		},
		{
			name:   "update without key change",
			change: cdc.Change{Op: cdc.OpUpdate, New: cdc.Tuple{txt("b2"), txt("9"), txt("1"), txt("m")}},
			want:   []string{upsert + " [1 m b2]"},
		},
		{
			name: "key change moves the row",
			change: cdc.Change{Op: cdc.OpUpdate, OldKind: cdc.TupleKey, Old: cdc.Tuple{null, null, txt("1"), null},
				New: cdc.Tuple{txt("b"), txt("9"), txt("2"), txt("m")}},
			want: []string{del + " [1]", upsert + " [2 m b]"},
		},
		{
			// The unchanged key is not SET either: a GENERATED ALWAYS AS
			// IDENTITY column refuses even SET id = id (issue 15, item 10).
			name:   "unchanged toast and key left out of SET",
			change: cdc.Change{Op: cdc.OpUpdate, New: cdc.Tuple{unchanged, txt("9"), txt("1"), txt("m2")}},
			want:   []string{`UPDATE "app"."people" SET "email" = $1::text::text WHERE "id" = $2::text::bigint [m2 1]`},
		},
		{
			name: "unchanged toast with a key change",
			change: cdc.Change{Op: cdc.OpUpdate, OldKind: cdc.TupleKey, Old: cdc.Tuple{null, null, txt("1"), null},
				New: cdc.Tuple{unchanged, txt("9"), txt("5"), txt("m")}},
			want: []string{`UPDATE "app"."people" SET "id" = $1::text::bigint, "email" = $2::text::text WHERE "id" = $3::text::bigint [5 m 1]`},
		},
		{
			name:   "delete by old key",
			change: cdc.Change{Op: cdc.OpDelete, OldKind: cdc.TupleKey, Old: cdc.Tuple{null, null, txt("7"), null}},
			want:   []string{del + " [7]"},
		},
		{
			name:    "delete without the key",
			change:  cdc.Change{Op: cdc.OpDelete, OldKind: cdc.TupleKey, Old: cdc.Tuple{null, null, null, null}},
			wantErr: true,
		},
		{
			name:    "binary value",
			change:  cdc.Change{Op: cdc.OpInsert, New: cdc.Tuple{{Kind: cdc.ValueBinary, Data: []byte{1}}, txt("9"), txt("1"), null}},
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := compile(planTable(), planRelation())
			if err != nil {
				t.Fatal(err)
			}
			b := &pgx.Batch{}
			err = p.queue(b, &tc.change)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			var got []string
			for _, q := range b.QueuedQueries {
				got = append(got, fmt.Sprintf("%s %v", q.SQL, q.Arguments))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestCastType(t *testing.T) {
	tests := []struct{ in, want string }{
		{"bigint", "bigint"},
		{"character varying(255)", "character varying"},
		{"character(3)", "bpchar"},
		{"character(3)[]", "bpchar[]"},
		{"bit(8)", "varbit"},
		{"numeric(12,2)", "numeric"},
		{"timestamp(3) with time zone", "timestamp with time zone"},
		{"text[]", "text[]"},
		{"public.mood", "public.mood"},
	}
	for _, tc := range tests {
		if got := mapping.CastType(tc.in); got != tc.want {
			t.Errorf("CastType(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}
