package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// fillUnchanged completes inserts that lack TOASTed values (issue 15, item
// 9). An update that moves a row into a publication's row filter is
// published as an insert; when the update left a TOASTed column alone and
// the replica identity does not carry the old row (DEFAULT or USING
// INDEX), PostgreSQL has no value to send for it and marks it "unchanged".
// The target has no row to keep the value from, so it is read from the
// source by key. The value read may be newer than the change, never older:
// any later change to it is still in the stream and applied after, and a
// row no longer in the source has its delete still to come, so the insert
// is dropped.
func (s *syncer) fillUnchanged(ctx context.Context, txs ...*cdc.Transaction) error {
	for _, tx := range txs {
		if tx.EndLSN != 0 && tx.EndLSN <= s.applied {
			continue
		}
		kept := tx.Changes[:0]
		for i := range tx.Changes {
			c := tx.Changes[i]
			if c.Op == cdc.OpInsert {
				ok, err := s.fillInsert(ctx, tx, &c)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
			}
			kept = append(kept, c)
		}
		// Drop the tail left behind, so it is not kept alive.
		clear(tx.Changes[len(kept):])
		tx.Changes = kept
	}
	return nil
}

// fillInsert fills the unchanged values of one insert from the source. It
// reports false when the row is gone from the source.
func (s *syncer) fillInsert(ctx context.Context, tx *cdc.Transaction, c *cdc.Change) (bool, error) {
	t := s.byName[c.Relation.Namespace+"."+c.Relation.Name]
	if t == nil || tx.CommitLSN < s.copied[t] {
		return true, nil
	}
	p, err := s.plan(c.Relation)
	if err != nil {
		// queueTx reports it.
		return true, nil
	}
	var missing []int // indexes into t.Columns
	for i, j := range p.pos {
		if c.New[j].Kind == cdc.ValueUnchanged {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return true, nil
	}
	key, err := p.key(c.New)
	if err != nil {
		return false, err
	}
	cols := make([]string, len(missing))
	for n, i := range missing {
		cols[n] = mapping.QuoteIdent(t.Columns[i].Source) + "::text"
	}
	conds := make([]string, len(t.Key))
	for n, k := range t.Key {
		kc := t.Columns[k]
		conds[n] = fmt.Sprintf("%s = $%d::text::%s", mapping.QuoteIdent(kc.Source), n+1, mapping.CastType(kc.SourceType))
	}
	vals := make([]*string, len(missing))
	dest := make([]any, len(missing))
	for n := range vals {
		dest[n] = &vals[n]
	}
	err = s.src.QueryRow(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+t.Source.Quoted()+" WHERE "+strings.Join(conds, " AND "), key...).Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		s.log.Info("insert without its unchanged TOAST values for a row gone from the source: its delete follows; skipped",
			"table", t.Source.String(), "commit_lsn", tx.CommitLSN.String())
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read unchanged TOAST values of a row of %s from the source: %w", t.Source, err)
	}
	row := make(cdc.Tuple, len(c.New))
	copy(row, c.New)
	for n, i := range missing {
		if vals[n] == nil {
			row[p.pos[i]] = cdc.Value{Kind: cdc.ValueNull}
		} else {
			row[p.pos[i]] = cdc.Value{Kind: cdc.ValueText, Data: []byte(*vals[n])}
		}
	}
	c.New = row
	return true, nil
}
