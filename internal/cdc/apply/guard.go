package apply

import (
	"context"
	"time"
)

// periodicChecks runs, at most once per StatusInterval (and at least a
// second apart), the checks a long run needs beside applying changes: that
// the run still holds its lock.
func (s *syncer) periodicChecks(ctx context.Context) error {
	if time.Since(s.checked) < max(s.cfg.StatusInterval, time.Second) {
		return nil
	}
	s.checked = time.Now()
	return s.lock.check(ctx)
}
