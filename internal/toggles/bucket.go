package toggles

import "math"

// BucketCount is the number of buckets a flag's users are spread over: one
// per hundredth of a percent, as in flagd's high-resolution fractional
// operation.
const BucketCount = 10000

// Bucket returns the user's bucket for a flag, in 0..BucketCount-1. It is
// flagd's fractional bucketing bit for bit: murmur3 x86 32-bit with seed 0
// over the bytes of flagKey followed by userID, scaled to BucketCount with
// integer arithmetic, so the same user lands in the same cohort here and in
// any application that evaluates the same flag with flagd.
func Bucket(flagKey, userID string) uint32 {
	// Hash flagKey+userID without a heap allocation for ordinary key sizes:
	// the buffer stays on the stack because the hash does not keep it.
	var buf [128]byte
	var data []byte
	if n := len(flagKey) + len(userID); n <= len(buf) {
		data = append(append(buf[:0], flagKey...), userID...)
	} else {
		data = make([]byte, 0, n)
		data = append(append(data, flagKey...), userID...)
	}
	return bucketOfHash(murmur3x86_32(data, 0))
}

// bucketOfHash maps a 32-bit hash onto 0..BucketCount-1.
func bucketOfHash(h uint32) uint32 {
	return uint32((uint64(h) * BucketCount) >> 32)
}

// Threshold converts a percentage (0..100, at most two decimals) into the
// number of buckets that are in: a user is in iff their bucket is below it.
func Threshold(percentage float64) uint32 {
	t := math.Round(percentage * 100)
	switch {
	case t <= 0 || math.IsNaN(t):
		return 0
	case t >= BucketCount:
		return BucketCount
	}
	return uint32(t)
}

// InRollout reports whether the user is in the flag's rollout at the given
// percentage. Raising the percentage only adds users; lowering it only
// removes them.
func InRollout(flagKey, userID string, percentage float64) bool {
	return Bucket(flagKey, userID) < Threshold(percentage)
}
