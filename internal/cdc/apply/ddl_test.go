package apply

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/mapping"
)

const ddlSchema = `CREATE TABLE items (id int PRIMARY KEY, a text, b text);`

const ddlQuery = `SELECT id, a, b FROM items ORDER BY id`

// TestSyncStopsWhenTableLeavesPublication pins issue 15, item 3 (a):
// ALTER TABLE … DROP COLUMN … CASCADE of a published column removes the
// table from the publication, and the running sync never applied another
// change to it, without a word. It must stop with an error saying so.
func TestSyncStopsWhenTableLeavesPublication(t *testing.T) {
	p := newPair(t, ddlSchema+`INSERT INTO items VALUES (1, 'a1', 'b1');`, ddlSchema)
	r := startSync(t, p.config("leaves", mapping.TableSpec{Source: "items"}))
	waitSame(t, p, r, ddlQuery, ddlQuery)
	execAll(t, p.src.Pool, `ALTER TABLE items DROP COLUMN b CASCADE`, `INSERT INTO items VALUES (2, 'a2')`)
	var err error
	select {
	case err = <-r.done:
		r.done <- err
	case <-time.After(60 * time.Second):
		t.Fatal("the sync went on after its table left the publication")
	}
	if !errors.Is(err, ErrLeftPublication) || !strings.Contains(err.Error(), "public.items") {
		t.Fatalf("got %v, want an error wrapping ErrLeftPublication naming public.items", err)
	}
}

// TestSyncRefusesMappedColumnDroppedWhileStopped pins issue 15, item 3 (b):
// a mapped column dropped while the sync was stopped made the restart remap
// in silence and copy the table again with that target column NULL in
// every row, exit 0. It must refuse, and leave the target as it was.
func TestSyncRefusesMappedColumnDroppedWhileStopped(t *testing.T) {
	p := newPair(t, ddlSchema+`INSERT INTO items VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2');`, ddlSchema)
	cfg := p.config("dropped", mapping.TableSpec{Source: "items"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	before := dump(t, p.dst.Pool, ddlQuery)
	execAll(t, p.src.Pool, `ALTER TABLE items DROP COLUMN b CASCADE`, `INSERT INTO items VALUES (3, 'a3')`)
	err := Run(testCtx(t), cfg)
	if !errors.Is(err, ErrSchemaDrift) || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("restart: got %v, want an error wrapping ErrSchemaDrift naming column \"b\"", err)
	}
	if got := dump(t, p.dst.Pool, ddlQuery); got != before {
		t.Errorf("target after the refused restart: got\n%s\nwant it unchanged:\n%s", got, before)
	}

	// Naming the columns says dropping b is meant: the table is published
	// and copied again, and the rows written meanwhile arrive.
	cfg.Tables = []mapping.TableSpec{{Source: "items", Columns: map[string]string{"id": "id", "a": "a"}}}
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("restart with the columns named: %v", err)
	}
	if s, d := dump(t, p.src.Pool, `SELECT id, a FROM items ORDER BY id`), dump(t, p.dst.Pool, `SELECT id, a FROM items ORDER BY id`); s != d {
		t.Errorf("after the restart with the columns named: got\n%s\nwant\n%s", d, s)
	}
}

// TestSyncRecopiesTableThatLeftPublicationWhileStopped: a copied table out
// of the publication at start has missed changes; published again in
// silence, they would never arrive. It is copied again.
func TestSyncRecopiesTableThatLeftPublicationWhileStopped(t *testing.T) {
	p := newPair(t, ddlSchema+`INSERT INTO items VALUES (1, 'a1', 'b1');`, ddlSchema)
	cfg := p.config("recopy", mapping.TableSpec{Source: "items"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `ALTER PUBLICATION datasync_recopy DROP TABLE items`,
		`INSERT INTO items VALUES (2, 'a2', 'b2')`, `UPDATE items SET a = 'a1 again' WHERE id = 1`)
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	if s, d := dump(t, p.src.Pool, ddlQuery), dump(t, p.dst.Pool, ddlQuery); s != d {
		t.Errorf("after the restart: got\n%s\nwant\n%s", d, s)
	}
}
