package apply

import (
	"context"
	"time"

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
	// A target restarting (right after a copy, say) is waited for, as
	// apply waits for it, for up to sequenceRetryFor.
	deadline := time.Now().Add(sequenceRetryFor)
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		moved, err := backfill.AdvanceSequences(ctx, s.dst, tables)
		for _, a := range moved {
			s.log.Info("advanced sequence past the copied keys", "target", a.Table.String(), "column", a.Column,
				"sequence", a.Sequence, "next_value_was", a.From, "next_value", a.To)
		}
		if err == nil || !targetRetryable(err) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		s.log.Warn("advancing the target's sequences failed; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
}

// sequenceRetryFor is how long advanceSequences waits for a target that
// is unreachable.
const sequenceRetryFor = time.Minute
