package problem

import (
	"slices"
	"testing"
)

func TestList(t *testing.T) {
	var l List
	l.Add(Join("", "window"), "is %s", "short")
	l.Add(Join("flags.f.guard", "min_requests"), "%d must be at least 1", 0)
	if got, want := Paths(l), []string{"window", "flags.f.guard.min_requests"}; !slices.Equal(got, want) {
		t.Fatalf("got paths %v, want %v", got, want)
	}
	if got, want := l[1].String(), "flags.f.guard.min_requests: 0 must be at least 1"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
