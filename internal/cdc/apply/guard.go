package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// ErrLeftPublication is wrapped by the error of a sync that found a mapped
// table gone from its publication.
var ErrLeftPublication = errors.New("mapped table left the publication")

// periodicChecks runs, at most once per StatusInterval (and at least a
// second apart), the checks a long run needs beside applying changes: that
// the run still holds its lock, and that every mapped table is still
// published.
func (s *syncer) periodicChecks(ctx context.Context) error {
	if time.Since(s.checked) < max(s.cfg.StatusInterval, time.Second) {
		return nil
	}
	s.checked = time.Now()
	s.pruneTombstones(ctx)
	// The reverse direction of a two-way sync has no lock of its own: the
	// forward direction checks the one both run under.
	if s.lock != nil {
		if err := s.lock.check(ctx); err != nil {
			return err
		}
	}
	return s.checkPublished(ctx)
}

// published returns the source tables ("schema.table") in the sync's
// publication, and whether the publication exists.
func (s *syncer) published(ctx context.Context) (map[string]bool, bool, error) {
	pub := PublicationName(s.cfg.Name)
	var exists bool
	if err := s.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&exists); err != nil {
		return nil, false, fmt.Errorf("read publication %s: %w", pub, err)
	}
	rows, err := s.src.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, pub)
	if err != nil {
		return nil, false, fmt.Errorf("read publication %s: %w", pub, err)
	}
	in := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, false, fmt.Errorf("read publication %s: %w", pub, err)
		}
		in[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read publication %s: %w", pub, err)
	}
	return in, exists, nil
}

// checkPublished stops the run when a mapped table has left the
// publication (issue 15, item 3): ALTER TABLE … DROP COLUMN … CASCADE of a
// published column removes the table from the publication, the server
// sends nothing more for it, and the sync would go on without a word while
// the table drifts. A source that cannot be reached is left to the stream's
// reconnects.
func (s *syncer) checkPublished(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	in, exists, err := s.published(cctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("check the publication", "error", err)
		}
		return nil
	}
	var gone []string
	for _, t := range s.tables {
		if !in[t.Source.String()] {
			gone = append(gone, t.Source.String())
		}
	}
	if len(gone) == 0 {
		return nil
	}
	what := "is no longer in publication " + PublicationName(s.cfg.Name)
	if !exists {
		what = "lost its publication: " + PublicationName(s.cfg.Name) + " was dropped"
	}
	return fmt.Errorf("source table %s %s (ALTER TABLE … DROP COLUMN … CASCADE of a published column does this): its changes are no longer streamed, so the sync stopped at %s; if a mapped column was dropped, update the mapping (and the target table), then run sync again: the table is published and copied again: %w",
		strings.Join(gone, ", "), what, s.applied, ErrLeftPublication)
}

// leftPublication returns the copied tables that are no longer in the
// publication: they left it while the sync was stopped, so changes made
// since may never have been streamed, and they must be copied again rather
// than quietly published again.
func (s *syncer) leftPublication(ctx context.Context) (map[*mapping.Table]bool, error) {
	in, exists, err := s.published(ctx)
	if err != nil || !exists {
		return nil, err
	}
	st, err := loadState(ctx, s.dst, s.cfg.Name)
	if err != nil {
		return nil, err
	}
	out := map[*mapping.Table]bool{}
	for _, t := range s.tables {
		if _, copied := st.copied[t.Target.String()]; copied && !in[t.Source.String()] {
			s.log.Warn("a copied table left the publication while sync was stopped: publishing and copying it again",
				"source", t.Source.String(), "target", t.Target.String())
			out[t] = true
		}
	}
	return out, nil
}

// checkColumnsGone refuses to start when a copied table mapped by default
// (the columns both tables have) has lost a source column since its copy
// (issue 15, item 3): the default mapping would shrink in silence, and the
// table be copied again with that target column NULL in every row. Naming
// the columns in the mapping says that is meant.
func (s *syncer) checkColumnsGone(ctx context.Context) error {
	st, err := loadState(ctx, s.dst, s.cfg.Name)
	if err != nil {
		return err
	}
	var problems []string
	for i, t := range s.tables {
		sig, ok := st.mapped[t.Target.String()]
		if !ok || i >= len(s.cfg.Tables) || len(s.cfg.Tables[i].Columns) > 0 {
			continue
		}
		// The signature's last two lines are the target and source column
		// lists (tableSignature); its first, the publication entry, may
		// span lines of a where filter.
		lines := strings.Split(sig, "\n")
		if len(lines) < 4 {
			continue
		}
		now := map[string]bool{}
		for _, c := range t.Columns {
			now[c.Target] = true
		}
		var gone []string
		for _, c := range splitQuoted(lines[len(lines)-2]) {
			if !now[c] {
				gone = append(gone, mapping.QuoteIdent(c))
			}
		}
		if len(gone) > 0 {
			problems = append(problems, fmt.Sprintf("source table %s: column(s) %s, mapped to %s when the table was copied, no longer exist in the source (dropped or renamed); copying it again would leave those target columns NULL in every row. Restore the column, or name the columns to sync in the mapping (config `columns:`) leaving them out, then run sync again",
				t.Source, strings.Join(gone, ", "), t.Target))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s; nothing was changed: %w", strings.Join(problems, "; "), ErrSchemaDrift)
	}
	return nil
}

// splitQuoted splits a list of quoted identifiers, as
// mapping.Table.TargetColumnList writes it, into the names.
func splitQuoted(list string) []string {
	var out []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(list); i++ {
		c := list[i]
		switch {
		case inQuote && c == '"' && i+1 < len(list) && list[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			inQuote = !inQuote
			if !inQuote {
				out = append(out, cur.String())
				cur.Reset()
			}
		case inQuote:
			cur.WriteByte(c)
		}
	}
	return out
}
