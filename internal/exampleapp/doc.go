// Package exampleapp holds what the example applications share: the legacy
// monolith (example-monolith) and the new services (example-services/...)
// that the proxy and datasync are demonstrated on.
//
// An application is an [App]: a name (sent in every response's X-Served-By
// header), embedded SQL migrations, and the resources it serves. [Main] runs
// one from environment variables (DATABASE_URL, ADDR, SEED_*): it applies the
// migrations under an advisory lock, seeds sample data, serves HTTP and shuts
// down gracefully on SIGTERM or SIGINT. The three apps are [Monolith],
// [UserService] and [ProductService]; their schemas are the SQL files in
// migrations/<app name>/, applied in name order and recorded in each
// database's schema_migrations table.
//
// Resources are REST collections over one table each ([Table], [Mount]):
//
//	GET    /api/X?limit=&after=   keyset pagination by id: {"items": [...], "next_after": 42}
//	GET    /api/X/{id}
//	POST   /api/X                 201 with the created row
//	PUT    /api/X/{id}            replaces the writable fields
//	DELETE /api/X/{id}            204
//
// Errors are JSON objects {"error": "...", "field": "..."}: 400 for bad JSON
// and invalid fields (field names the offending one), 404 for unknown ids, 409
// for duplicates and rows still referenced elsewhere.
//
// The users, products and orders resources ([UsersTable], [ProductsTable],
// [OrdersTable]) are defined here once, so the monolith and the services serve
// exactly the same JSON contract even where their tables differ
// (product-service stores products in catalog_items with a title column).
package exampleapp
