package toggles

import (
	"fmt"
	"math"
	"testing"
)

// The hashes below were computed outside this package, with the npm package
// murmurhash3js 3.0.1 (x86.hash32, seed 0) run under Node.js over the UTF-8
// bytes of flagKey+userID, and the bucket with BigInt arithmetic:
// (BigInt(h) * 10000n) >> 32n. They pin the bucketing to flagd's.
var bucketVectors = []struct {
	flag, user string
	hash       uint32
	bucket     uint32
}{
	{"users-migration", "u-1", 1060455508, 2469},
	{"users-migration", "u-2", 1844994936, 4295},
	{"users-migration", "alice@example.com", 470834864, 1096},
	{"users-migration", "", 1241405496, 2890},
	{"products-migration", "u-42", 26256017, 61},
	{"a", "b", 2613040991, 6083},
	{"new-checkout", "user-123456789", 3155626115, 7347},
	{"flag", "ünïcödé-üser", 2580626591, 6008},
	{"users-migration", "550e8400-e29b-41d4-a716-446655440000", 2074818286, 4830},
	{"x", "", 1050319643, 2445},
	{"", "abc", 3017643002, 7025},
	{"headline", "12345", 1835582577, 4273},
	{"", "", 0, 0},
	{"hel", "lo", 613153351, 1427},
	{"The quick brown fox ", "jumps over the lazy dog", 776992547, 1809},
}

func TestBucketMatchesIndependentVectors(t *testing.T) {
	for _, v := range bucketVectors {
		t.Run(fmt.Sprintf("%s+%s", v.flag, v.user), func(t *testing.T) {
			if got := murmur3x86_32([]byte(v.flag+v.user), 0); got != v.hash {
				t.Fatalf("murmur3x86_32(%q): got %d, want %d", v.flag+v.user, got, v.hash)
			}
			if got := bucketOfHash(v.hash); got != v.bucket {
				t.Fatalf("bucketOfHash(%d): got %d, want %d", v.hash, got, v.bucket)
			}
			if got := Bucket(v.flag, v.user); got != v.bucket {
				t.Fatalf("Bucket(%q, %q): got %d, want %d", v.flag, v.user, got, v.bucket)
			}
		})
	}
}

func TestBucketLongKeys(t *testing.T) {
	// Keys past the stack buffer take the allocating path; both must agree
	// with a hash over the same bytes split differently.
	long := string(make([]byte, 300))
	if got, want := Bucket(long[:150], long[150:]), Bucket(long[:10], long[10:]); got != want {
		t.Fatalf("Bucket over a split 300-byte key: got %d, want %d", got, want)
	}
}

func TestThreshold(t *testing.T) {
	tests := []struct {
		name string
		pct  float64
		want uint32
	}{
		{"zero", 0, 0},
		{"hundred", 100, 10000},
		{"one hundredth", 0.01, 1},
		{"two decimals", 12.34, 1234},
		{"float noise rounds", 0.29, 29},
		{"negative clamps", -5, 0},
		{"above hundred clamps", 150, 10000},
		{"NaN is none", math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Threshold(tt.pct); got != tt.want {
				t.Fatalf("Threshold(%v): got %d, want %d", tt.pct, got, tt.want)
			}
		})
	}
}

func TestInRolloutBoundary(t *testing.T) {
	// users-migration+u-1 is bucket 2469: in at 24.70 %, out at 24.69 %.
	if !InRollout("users-migration", "u-1", 24.70) {
		t.Fatalf("InRollout at 24.70: got false, want true")
	}
	if InRollout("users-migration", "u-1", 24.69) {
		t.Fatalf("InRollout at 24.69: got true, want false")
	}
}

func TestRaisingPercentageNeverMovesAUserOut(t *testing.T) {
	steps := []float64{0, 0.01, 1, 5, 10, 25, 33.33, 50, 75, 99.99, 100}
	for i := range 20000 {
		user := fmt.Sprintf("user-%d", i)
		wasIn := false
		for _, pct := range steps {
			in := InRollout("users-migration", user, pct)
			if wasIn && !in {
				t.Fatalf("user %s: in below %v %%, out at %v %%", user, pct, pct)
			}
			wasIn = in
		}
		if !wasIn {
			t.Fatalf("user %s: got out at 100 %%, want in", user)
		}
	}
}

func TestDistributionWithinOnePoint(t *testing.T) {
	const users = 100000
	buckets := make([]uint32, users)
	for i := range buckets {
		buckets[i] = Bucket("users-migration", fmt.Sprintf("u-%d", i))
	}
	for _, pct := range []float64{1, 10, 25, 50, 99} {
		t.Run(fmt.Sprint(pct), func(t *testing.T) {
			th := Threshold(pct)
			in := 0
			for _, b := range buckets {
				if b < th {
					in++
				}
			}
			got := float64(in) * 100 / users
			if math.Abs(got-pct) > 1 {
				t.Fatalf("share in at %v %%: got %.2f %%, want within 1 point", pct, got)
			}
		})
	}
}

func BenchmarkBucket(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Bucket("users-migration", "550e8400-e29b-41d4-a716-446655440000")
	}
}
