package apply

import (
	"context"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// advanceSequences moves the target's identity, serial and nextval
// sequences of tables past the keys the copy and the stream wrote, and
// logs each one it moved: the sync runs after every copy and when it stops
// (SIGTERM, or caught up), so that the first insert after cutover does not
// collide with a copied key (issue 15, item 10). Keys the stream applies
// while the sync runs are covered at its next stop. In two-way mode the
// sequences are left alone: a disjoint-range scheme gives each side its
// own keys.
func (s *syncer) advanceSequences(ctx context.Context, tables []*mapping.Table) error {
	if s.cfg.TwoWay {
		return nil
	}
	moved, err := backfill.AdvanceSequences(ctx, s.dst, tables)
	for _, a := range moved {
		s.log.Info("advanced sequence past the copied keys", "target", a.Table.String(), "column", a.Column,
			"sequence", a.Sequence, "next_value_was", a.From, "next_value", a.To)
	}
	return err
}
