package progress_test

import (
	"fmt"
	"os"
	"time"

	"github.com/strangler-fig/strangler/internal/progress"
)

func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	r := progress.New(progress.Options{Out: os.Stdout, Label: "public.users", Total: 2000, Now: clock})
	r.Add(500)
	now = now.Add(time.Second)
	r.Report()
	r.Add(1500)
	now = now.Add(3 * time.Second)
	fmt.Println(r.Finish())
	// Output:
	// {"time":"2026-03-01T12:00:01Z","label":"public.users","rows":500,"total":2000,"percent":25,"rows_per_second":500,"elapsed_seconds":1,"eta_seconds":3}
	// {"time":"2026-03-01T12:00:04Z","label":"public.users","rows":2000,"total":2000,"percent":100,"rows_per_second":500,"elapsed_seconds":4,"done":true}
	// public.users: 2000 rows in 4.0s (500 rows/s)
}
