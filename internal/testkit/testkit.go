// Package testkit holds small helpers shared by tests.
package testkit

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for one writer and concurrent readers: the
// output of a process or a logger a test reads while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
