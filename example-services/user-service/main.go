// Command user-service is the new users service of the Strangler demo: it
// serves /api/users with the monolith's JSON contract from a database of its
// own, whose users table has the monolith's columns.
//
// It reads DATABASE_URL and ADDR (default 127.0.0.1:8001) and applies its
// schema (internal/exampleapp/migrations/user-service) at start. Every
// response carries X-Served-By: user-service. Run it with -h for the details.
package main

import "github.com/strangler-fig/strangler/internal/exampleapp"

func main() { exampleapp.Main(exampleapp.UserService()) }
