// Command product-service is the new products service of the Strangler demo:
// it serves /api/products with the monolith's JSON contract from a database
// of its own, where products live in catalog_items and a product's name is
// its title.
//
// It reads DATABASE_URL and ADDR (default 127.0.0.1:8002) and applies its
// schema (internal/exampleapp/migrations/product-service) at start. Every
// response carries X-Served-By: product-service. Run it with -h for the
// details.
package main

import "github.com/strangler-fig/strangler/internal/exampleapp"

func main() { exampleapp.Main(exampleapp.ProductService()) }
