package proxyserver

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

// BenchmarkFleetPropagation measures, with 3 replicas on one store under
// load (2 clients per replica sending requests without pause), the time
// from a flag write through one replica's admin API to the new decision
// on both others: each op writes 0 or 100 % through replica op%3, then
// probes the two others (one request each, every millisecond) until both
// send the probe user to the new side. It reports the p50 and p99 of
// those times, and the p50 of the write's own answer time.
//
//	go test -run '^$' -bench BenchmarkFleetPropagation -benchtime 200x ./internal/proxyserver/
func BenchmarkFleetPropagation(b *testing.B) {
	db := pgtest.NewDB(b)
	svc := namedServer(b, "user-service", nil, nil)
	reps := startFleet(b, db.URL, svc.URL, fleetFlags, 3)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range reps {
		for c := range 2 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest(http.MethodGet, r.proxyURL+"/api/users", nil)
					req.Header.Set("X-User-ID", fmt.Sprintf("load-%d-%d", c, i%100))
					if resp, err := http.DefaultClient.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			})
		}
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	times := make([]time.Duration, 0, b.N)
	puts := make([]time.Duration, 0, b.N) // the write's own answer time
	b.ResetTimer()
	for i := range b.N {
		pct, want := 100, "user-service"
		if i%2 == 1 {
			pct, want = 0, "monolith"
		}
		writer := reps[i%3]
		start := time.Now()
		setFlag(b, writer.adminURL, "users-migration", fmt.Sprintf(`{"percentage": %d}`, pct))
		puts = append(puts, time.Since(start))
		for _, r := range reps {
			if r == writer {
				continue
			}
			for servedBy(b, r.proxyURL+"/api/users", "probe", nil) != want {
				if time.Since(start) > 30*time.Second {
					b.Fatalf("%s still not at %d %% after 30s", r.name, pct)
				}
				time.Sleep(time.Millisecond)
			}
		}
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(times)
	slices.Sort(puts)
	q := func(ts []time.Duration, p float64) float64 {
		return float64(ts[int(p*float64(len(ts)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(times, 0.5), "p50-ms")
	b.ReportMetric(q(times, 0.99), "p99-ms")
	b.ReportMetric(q(times, 1), "max-ms")
	b.ReportMetric(q(puts, 0.5), "write-p50-ms")
}
