package guard_test

import (
	"fmt"
	"time"

	"github.com/strangler-fig/strangler/internal/guard"
)

func ExampleSet() {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	set, err := guard.New(guard.Options{
		Now: func() time.Time { return now },
		OnTrip: func(flag string, t guard.Trip) {
			// The proxy sets the flag to 0 % here (see ramp.Controller.Trip).
			fmt.Printf("%s tripped: %s\n", flag, t.Reason)
		},
	})
	if err != nil {
		panic(err)
	}
	set.Configure(map[string]guard.Config{
		"users-migration": {Window: 60 * time.Second, MinRequests: 50, MaxErrorRate: 0.02, MaxP99: 800 * time.Millisecond},
	})
	set.Tick()
	for second := range 60 {
		for i := range 10 { // per request, on the proxy's path
			set.Record("users-migration", guard.Outcome{Error: second >= 30 && i < 4, Latency: 30 * time.Millisecond})
		}
		now = now.Add(time.Second)
		set.Tick() // the background loop, Set.Run, does this every second
	}
	st, _ := set.State("users-migration")
	fmt.Println("tripped:", st.Tripped)
	// Output:
	// users-migration tripped: error rate 0.0667 > 0.02 over 1m0s (360 requests)
	// tripped: true
}
