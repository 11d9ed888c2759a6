package guard

import (
	"math/bits"
	"time"
)

// Latencies are bucketed in microseconds: 0..7 µs one bucket each, then
// eight buckets per power of two. Bucket widths are at most 1/8 of their
// lower bound. Latencies beyond 2^36 µs (about 19 hours) share the last
// bucket.
const (
	subBits    = 3
	subBuckets = 1 << subBits
	maxExp     = 36
	numBuckets = (maxExp-subBits+1)*subBuckets + subBuckets
)

// bucketOf returns the histogram bucket of latency d.
func bucketOf(d time.Duration) int {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	if us < subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1
	if e > maxExp {
		return numBuckets - 1
	}
	m := (us >> (e - subBits)) & (subBuckets - 1)
	return (e-subBits+1)*subBuckets + int(m)
}

// bucketUpper returns the exclusive upper bound of bucket i.
func bucketUpper(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i+1) * time.Microsecond
	}
	e := i/subBuckets + subBits - 1
	m := uint64(i % subBuckets)
	return time.Duration((subBuckets+m+1)<<(e-subBits)) * time.Microsecond
}

// quantile returns the upper bound of the bucket holding the nearest-rank
// q-quantile of the counts in h; 0 when h is empty.
func quantile(h *[numBuckets]uint64, total uint64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total))
	if float64(rank) < q*float64(total) {
		rank++
	}
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, n := range h {
		seen += n
		if seen >= rank {
			return bucketUpper(i)
		}
	}
	return bucketUpper(numBuckets - 1)
}
