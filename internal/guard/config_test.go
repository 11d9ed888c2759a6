package guard

import (
	"testing"
	"time"
)

func TestConfigString(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string
	}{
		{"both limits", Config{Window: time.Minute, MinRequests: 50, MaxErrorRate: 0.02, MaxP99: 800 * time.Millisecond},
			"window 1m0s, min 50 requests, max error rate 0.02, max p99 800ms"},
		{"error rate only", Config{Window: 5 * time.Second, MinRequests: 20, MaxErrorRate: 0.05},
			"window 5s, min 20 requests, max error rate 0.05"},
		{"p99 only", Config{Window: time.Second, MinRequests: 1, MaxP99: time.Second},
			"window 1s, min 1 requests, max p99 1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
