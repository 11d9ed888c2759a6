package backfill

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket shared by the workers: each row costs a token,
// tokens come back at rate per second, and at most burst accumulate while
// idle. Rows are paid for after they are copied; a worker whose batch put
// the bucket in debt waits until the debt is paid back.
type bucket struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now func() time.Time) *bucket {
	b := &bucket{rate: rate, burst: max(float64(burst), 1), now: now}
	b.tokens = b.burst
	b.last = now()
	return b
}

// delay takes n tokens and returns how long the caller must wait before
// going on.
func (b *bucket) delay(n int64) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// take takes n tokens and waits, if needed, until the bucket is out of debt
// or ctx is done. A nil bucket never waits.
func (b *bucket) take(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	d := b.delay(n)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
