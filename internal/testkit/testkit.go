// Package testkit holds small helpers shared by the proxy's tests.
package testkit

import (
	"net"
	"testing"
	"time"
)

// Eventually polls cond every few milliseconds until it holds, and fails tb
// when it still does not after timeout. Tests poll with a deadline instead of
// sleeping for a guessed time.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago: for a
// server a test starts in another process, or as the address of an upstream
// that refuses connections.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
