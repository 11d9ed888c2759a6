package toggles

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// designFlags is the flags file of DESIGN.md.
const designFlags = `segments:
  employees: {claim: email, suffix: "@example.com"}
  beta: {header: X-Beta-Tester, equals: "true"}
flags:
  users-migration:
    enabled: true
    percentage: 25
    include_users: [u-qa-1]
    exclude_users: []
    segments: [employees, beta]
    segment_percentages: {employees: 100}
    guard: {window: 60s, min_requests: 50, max_error_rate: 0.02, max_p99: 800ms}
    ramp: {steps: [1, 5, 25, 50, 100], interval: 10m}
`

// writeFlags writes a flags file into a new temporary folder.
func writeFlags(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "flags.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatalf("write flags file: %v", err)
	}
	return path
}

// openStore opens a store over a new flags file with content.
func openStore(tb testing.TB, content string, opts StoreOptions) *Store {
	tb.Helper()
	s, err := OpenStore(writeFlags(tb, content), opts)
	if err != nil {
		tb.Fatalf("OpenStore: %v", err)
	}
	return s
}

// newTestDecider returns a Decider over store through a real OpenFeature
// client.
func newTestDecider(tb testing.TB, store *Store, m *Metrics) *Decider {
	tb.Helper()
	client, shutdown, err := NewClient(context.Background(), store)
	if err != nil {
		tb.Fatalf("NewClient: %v", err)
	}
	tb.Cleanup(func() { _ = shutdown(context.Background()) })
	return NewDecider(client, store, m)
}

func ptr[T any](v T) *T { return &v }
