package cdc

import (
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics and that every failure wraps
// ErrMalformed. It is seeded with the messages captured from a server.
func FuzzDecode(f *testing.F) {
	for _, m := range readGolden(f) {
		f.Add(m)
	}
	f.Add(cat("M", []byte{1}, u64(0x10), "pfx\x00", u32(5), "hello"))
	f.Add(cat("I", u32(7), "N", u16(2), "b", u32(4), []byte{0, 0, 0, 42}, "n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got error %v, want one wrapping ErrMalformed", err)
			}
			if m != nil {
				t.Fatalf("got message %v with error %v, want nil", m, err)
			}
			return
		}
		if m == nil {
			t.Fatal("got nil message and nil error")
		}
		if m.Kind() != data[0] {
			t.Fatalf("kind: got %q, want %q", m.Kind(), data[0])
		}
	})
}

// FuzzParseCopyData checks the stream envelope the same way.
func FuzzParseCopyData(f *testing.F) {
	f.Add(cat("k", u64(5), u64(6), []byte{1}))
	f.Add(cat("w", u64(1), u64(2), u64(3), "B"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseCopyData(data)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("got error %v, want one wrapping ErrMalformed", err)
		}
		if err == nil && m == nil {
			t.Fatal("got nil message and nil error")
		}
	})
}
