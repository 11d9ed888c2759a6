package reconcile_test

import (
	"os"
	"time"

	"github.com/strangler-fig/strangler/internal/reconcile"
)

func ExampleReport_WriteSummary() {
	rep := &reconcile.Report{
		Consistent:      false,
		DurationSeconds: 1.25,
		Tables: []reconcile.TableReport{{
			Source: "public.users", Target: "public.users",
			SourceRows: 100000, TargetRows: 99998,
			MissingInTarget: 2, Mismatched: 1,
			Samples: reconcile.Samples{
				MissingInTarget: []reconcile.Key{{{Column: "id", Value: int64(17)}}, {{Column: "id", Value: int64(4242)}}},
				Mismatched: []reconcile.Mismatch{{
					Key:     reconcile.Key{{Column: "id", Value: int64(5)}},
					Columns: []string{"email", "updated_at"},
				}},
			},
			Duration: 1200 * time.Millisecond,
		}},
	}
	rep.WriteSummary(os.Stdout)
	// Output:
	// public.users: DIFFERENT (source 100000 rows, target 99998 rows, 1.20s)
	//   missing in target: 2 (id=17; id=4242)
	//   extra in target:   0
	//   mismatched:        1 (id=5)
	//     id=5: email, updated_at
	// differences found: 1 table(s) in 1.25s
}
