package backfill

import (
	"context"
	"math"
	"testing"
	"time"
)

// TestBucket pins the delay of single takes against a fake clock.
func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBucket(100, 50, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		take    int64
		want    time.Duration
	}{
		{0, 50, 0},                      // the burst is there at the start
		{0, 50, 500 * time.Millisecond}, // 50 rows in debt at 100 rows/s
		{500 * time.Millisecond, 10, 100 * time.Millisecond},
		{10 * time.Second, 50, 0}, // idle time refills up to the burst only
		{0, 100, time.Second},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := b.delay(s.take); got != s.want {
			t.Errorf("step %d: got delay %v, want %v", i, got, s.want)
		}
	}
}

// TestBucketRate drives the bucket with a fake clock, as a worker would:
// copy a batch (which takes some time), pay for its rows, wait the delay.
// Over a long run the rows per second must come out at the rate, and never
// above rate + burst over any stretch from the start.
func TestBucketRate(t *testing.T) {
	cases := []struct {
		name        string
		rate        float64
		burst       int
		batch       int64
		copyTakes   time.Duration
		batches     int
		wantSeconds float64 // after the last wait
	}{
		// 100 batches of 100 rows at 1,000 rows/s: the first 1,000 rows
		// ride on the burst, the other 9,000 take 9 s.
		{"instant copies", 1000, 1000, 100, 0, 100, 9},
		// Copies slower than the rate: the bucket never makes anyone wait.
		{"slow copies", 1000, 100, 100, 200 * time.Millisecond, 50, 10},
		{"batch larger than burst", 50, 10, 20, 0, 10, 3.8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			start := now
			b := newBucket(tc.rate, tc.burst, func() time.Time { return now })
			var rows int64
			for i := 0; i < tc.batches; i++ {
				now = now.Add(tc.copyTakes)
				rows += tc.batch
				d := b.delay(tc.batch)
				if d < 0 {
					t.Fatalf("batch %d: negative delay %v", i, d)
				}
				now = now.Add(d)
				elapsed := now.Sub(start).Seconds()
				if limit := tc.rate*elapsed + float64(tc.burst); float64(rows) > limit+0.01 {
					t.Fatalf("batch %d: %d rows in %.3f s, over rate × time + burst = %.1f", i, rows, elapsed, limit)
				}
			}
			if got := now.Sub(start).Seconds(); math.Abs(got-tc.wantSeconds) > 1e-5 {
				t.Errorf("%d rows took %.6f s, want %.6f", rows, got, tc.wantSeconds)
			}
		})
	}
}

// TestBucketTakeStopsOnCancel pins that a worker waiting on the bucket
// returns as soon as the run is cancelled.
func TestBucketTakeStopsOnCancel(t *testing.T) {
	b := newBucket(1, 1, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.take(ctx, 3600) }() // an hour's worth of debt
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("take: got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("take did not return after cancel")
	}
	var nilBucket *bucket
	if err := nilBucket.take(ctx, 1<<40); err != nil {
		t.Fatalf("a nil bucket (no cap): got %v, want nil", err)
	}
}
