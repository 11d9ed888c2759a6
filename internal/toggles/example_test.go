package toggles_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/strangler-fig/strangler/internal/toggles"
)

func Example() {
	dir, _ := os.MkdirTemp("", "flags")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "flags.yaml")
	_ = os.WriteFile(path, []byte("flags:\n  users-migration: {percentage: 25, include_users: [u-qa-1]}\n"), 0o644)

	store, err := toggles.OpenStore(path, toggles.StoreOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	client, shutdown, err := toggles.NewClient(context.Background(), store)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shutdown(context.Background())
	resolver, err := toggles.NewResolver(toggles.ResolverConfig{
		Sources: []toggles.IdentitySource{{Header: "X-User-ID"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	decider := toggles.NewDecider(client, store, nil)

	for _, user := range []string{"u-1", "u-2", "u-qa-1", ""} {
		req := httptest.NewRequest(http.MethodGet, "/api/users", nil)
		req.Header.Set("X-User-ID", user)
		d := decider.Decide(req.Context(), "users-migration", resolver.Resolve(req), req.Header)
		fmt.Printf("%q -> %s (%s)\n", user, d.Backend(), d.Reason)
	}

	// Raising the percentage is in force when Update returns.
	if _, err := store.Update("users-migration", toggles.Patch{Percentage: ptr(50.0)}, "example"); err != nil {
		fmt.Println(err)
		return
	}
	d := decider.Decide(context.Background(), "users-migration", toggles.Identity{UserID: "u-2"}, nil)
	fmt.Printf("%q -> %s (%s, bucket %d)\n", "u-2", d.Backend(), d.Reason, d.Bucket)
	// Output:
	// "u-1" -> service (split)
	// "u-2" -> monolith (split)
	// "u-qa-1" -> service (included)
	// "" -> monolith (no_user)
	// "u-2" -> service (split, bucket 4295)
}

func ptr[T any](v T) *T { return &v }

func ExampleExportFlagd() {
	f, err := toggles.Parse([]byte("flags:\n  users-migration: {percentage: 12.5, exclude_users: [u-bad]}\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := toggles.ExportFlagd(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(string(out))
	// Output:
	// {
	//   "$schema": "https://flagd.dev/schema/v0/flags.json",
	//   "flags": {
	//     "users-migration": {
	//       "state": "ENABLED",
	//       "variants": {
	//         "monolith": false,
	//         "service": true
	//       },
	//       "defaultVariant": "monolith",
	//       "targeting": {
	//         "if": [
	//           {
	//             "in": [
	//               {
	//                 "var": "targetingKey"
	//               },
	//               [
	//                 "u-bad"
	//               ]
	//             ]
	//           },
	//           "monolith",
	//           {
	//             "fractional": [
	//               {
	//                 "cat": [
	//                   {
	//                     "var": "$flagd.flagKey"
	//                   },
	//                   {
	//                     "var": "targetingKey"
	//                   }
	//                 ]
	//               },
	//               [
	//                 "service",
	//                 1250
	//               ],
	//               [
	//                 "monolith",
	//                 8750
	//               ]
	//             ]
	//           }
	//         ]
	//       }
	//     }
	//   }
	// }
}
