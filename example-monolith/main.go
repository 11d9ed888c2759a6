// Command example-monolith is the legacy application of the Strangler demo:
// a Go + PostgreSQL app serving users, products and orders over REST, the
// one strangler-proxy stands in front of.
//
// It reads DATABASE_URL and ADDR (default 127.0.0.1:8000), applies its
// schema (internal/exampleapp/migrations/monolith) at start, and with
// SEED_USERS=N / SEED_PRODUCTS=N creates sample data. Every response carries
// X-Served-By: monolith. Run it with -h for the details.
package main

import "github.com/strangler-fig/strangler/internal/exampleapp"

func main() { exampleapp.Main(exampleapp.Monolith()) }
