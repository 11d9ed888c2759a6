package apply

import (
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// toastFilterSchema has a TOASTable column and a replica identity index
// that covers the where filter's column, as PostgreSQL requires of a row
// filter on a table whose updates are published.
const toastFilterSchema = `CREATE TABLE docs (id int NOT NULL, status text NOT NULL, body text, n int,
		PRIMARY KEY (id));
	CREATE UNIQUE INDEX docs_identity ON docs (id, status);
	ALTER TABLE docs REPLICA IDENTITY USING INDEX docs_identity;
	ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;`

const toastFilterTarget = `CREATE TABLE docs (id int PRIMARY KEY, status text NOT NULL, body text, n int);`

// TestSyncUpdateIntoFilterWithUnchangedToast pins issue 15, item 9: with a
// where filter and REPLICA IDENTITY USING INDEX, an UPDATE that moves a row
// into the filter without touching its TOASTed column is published as an
// INSERT whose TOASTed value is marked unchanged and not sent. The sync
// exited 2 with "malformed pgoutput message", on every restart. The value
// must be fetched from the source and the row arrive whole.
func TestSyncUpdateIntoFilterWithUnchangedToast(t *testing.T) {
	p := newPair(t, toastFilterSchema+`INSERT INTO docs VALUES
		(1, 'draft', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g), 1),
		(2, 'draft', (SELECT string_agg(md5((g + 7)::text), '') FROM generate_series(1, 2000) g), 2),
		(3, 'published', 'small', 3);`, toastFilterTarget)
	const query = `SELECT id, status, md5(body), length(body), n FROM docs WHERE status = 'published' ORDER BY id`
	r := startSync(t, p.config("toastfilter", mapping.TableSpec{Source: "docs", Where: "status = 'published'"}))
	waitSame(t, p, r, query, query)
	steps := []struct {
		name string
		sql  string
	}{
		{name: "moved into the filter", sql: `UPDATE docs SET status = 'published', n = 10 WHERE id = 1`},
		{name: "moved in and deleted in one transaction", sql: `BEGIN; UPDATE docs SET status = 'published' WHERE id = 2; DELETE FROM docs WHERE id = 2; COMMIT`},
		{name: "moved out and in again", sql: `UPDATE docs SET status = 'draft' WHERE id = 1; UPDATE docs SET status = 'published', n = 11 WHERE id = 1`},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			execAll(t, p.src.Pool, step.sql)
			waitSame(t, p, r, query, `SELECT id, status, md5(body), length(body), n FROM docs ORDER BY id`)
		})
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: got %v, want nil", err)
	}
}
