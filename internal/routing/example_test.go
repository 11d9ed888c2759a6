package routing_test

import (
	"fmt"
	"net/http"

	"github.com/strangler-fig/strangler/internal/routing"
)

func ExampleTable_Match() {
	table := routing.NewTable([]*routing.Route{
		{Label: "users", Prefix: "/api/users"},
		{Label: "api", Prefix: "/api"},
	})
	for _, path := range []string{"/api/users/7", "/api/usersettings", "/home"} {
		if r := table.Match(path); r != nil {
			fmt.Println(path, "->", r.Label)
		} else {
			fmt.Println(path, "-> monolith")
		}
	}
	// Output:
	// /api/users/7 -> users
	// /api/usersettings -> api
	// /home -> monolith
}

// A Rollout decides, per request, whether a route's service gets it. This one
// sends beta testers to the service and everyone else to the monolith.
func ExampleRolloutFunc() {
	beta := routing.RolloutFunc(func(r *http.Request, route *routing.Route) routing.Decision {
		if r.Header.Get("X-Beta") == "true" {
			return routing.Decision{Backend: routing.BackendService, Reason: "beta"}
		}
		return routing.Decision{Backend: routing.BackendMonolith, Reason: "not_beta"}
	})
	route := &routing.Route{Prefix: "/api/users", Service: "users", Flag: "users-migration"}
	r, _ := http.NewRequest("GET", "http://proxy/api/users/1", nil)
	r.Header.Set("X-Beta", "true")
	fmt.Println(beta.Decide(r, route).Backend)
	fmt.Println(routing.DefaultRollout(r, route).Reason)
	// Output:
	// service
	// flag_unavailable
}
