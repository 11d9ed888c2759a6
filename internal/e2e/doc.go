// Package e2e holds tests of the whole toolkit at once: the real binaries
// (strangler-proxy, datasync, example-monolith, user-service) as processes,
// against a real PostgreSQL cluster, driven the way an operator drives a
// migration. It has no code of its own.
package e2e
