package cdc

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzDecode fuzzes the adapter around pglogrepl's parser: Decode never
// panics, every failure wraps ErrMalformed, no message the frame check lets
// through makes pglogrepl's parser fail, and a decoded message encodes back
// to exactly the bytes it came from (nothing lost or invented in the
// conversion). It is seeded with the messages captured from a server.
func FuzzDecode(f *testing.F) {
	for _, m := range readGolden(f) {
		f.Add(m)
	}
	f.Add(cat("M", []byte{1}, u64(0x10), "pfx\x00", u32(5), "hello"))
	f.Add(cat("I", u32(7), "N", u16(2), "b", u32(4), []byte{0, 0, 0, 42}, "n"))
	f.Add(cat("T", u32(2), []byte{3}, u32(1), u32(2)))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got error %v, want one wrapping ErrMalformed", err)
			}
			if errors.Is(err, errParserPanic) {
				t.Fatalf("the frame check let through a message pglogrepl cannot parse: %v", err)
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
		got, loose := encode(m)
		if len(got) == len(data) {
			for _, at := range loose {
				got[at] = data[at]
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("encoded back: got %x, want %x", got, data)
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
		if x, ok := m.(*XLogData); ok && !bytes.Equal(x.Data, data[25:]) {
			t.Fatalf("XLogData payload: got %x, want %x", x.Data, data[25:])
		}
	})
}

// encode writes a message in pgoutput's wire format, for the round trip
// of FuzzDecode. loose lists the bytes that need not round-trip: flag bytes
// whose unused bits are not kept (a column's flags, a logical message's),
// and commit times, which pglogrepl turns into nanoseconds since 1970, an
// int64 that overflows past the year 2262.
func encode(m Message) (b []byte, loose []int) {
	b = []byte{m.Kind()}
	time8 := func(t time.Time) {
		for i := range 8 {
			loose = append(loose, len(b)+i)
		}
		b = append(b, u64(uint64(micros(t)))...)
	}
	str := func(s string) { b = append(b, s...); b = append(b, 0) }
	tup := func(t Tuple) {
		b = append(b, u16(uint16(len(t)))...)
		for _, v := range t {
			b = append(b, v.Kind)
			if v.Kind == ValueText || v.Kind == ValueBinary {
				b = append(b, u32(uint32(len(v.Data)))...)
				b = append(b, v.Data...)
			}
		}
	}
	switch m := m.(type) {
	case *Begin:
		b = append(b, u64(uint64(m.FinalLSN))...)
		time8(m.CommitTime)
		b = append(b, u32(m.Xid)...)
	case *Commit:
		b = append(b, m.Flags)
		b = append(b, u64(uint64(m.CommitLSN))...)
		b = append(b, u64(uint64(m.EndLSN))...)
		time8(m.CommitTime)
	case *Origin:
		b = append(b, u64(uint64(m.CommitLSN))...)
		str(m.Name)
	case *Relation:
		b = append(b, u32(m.ID)...)
		str(m.Namespace)
		str(m.Name)
		b = append(b, m.ReplicaIdentity)
		b = append(b, u16(uint16(len(m.Columns)))...)
		for _, c := range m.Columns {
			var flags byte
			if c.Key {
				flags = 1
			}
			loose = append(loose, len(b))
			b = append(b, flags)
			str(c.Name)
			b = append(b, u32(c.TypeOID)...)
			b = append(b, u32(uint32(c.TypeMod))...)
		}
	case *Type:
		b = append(b, u32(m.OID)...)
		str(m.Namespace)
		str(m.Name)
	case *Insert:
		b = append(b, u32(m.RelationID)...)
		b = append(b, 'N')
		tup(m.New)
	case *Update:
		b = append(b, u32(m.RelationID)...)
		if m.OldKind != 0 {
			b = append(b, m.OldKind)
			tup(m.Old)
		}
		b = append(b, 'N')
		tup(m.New)
	case *Delete:
		b = append(b, u32(m.RelationID)...)
		b = append(b, m.OldKind)
		tup(m.Old)
	case *Truncate:
		b = append(b, u32(uint32(len(m.RelationIDs)))...)
		b = append(b, m.Options)
		for _, id := range m.RelationIDs {
			b = append(b, u32(id)...)
		}
	case *LogicalMessage:
		var flags byte
		if m.Transactional {
			flags = 1
		}
		loose = append(loose, len(b))
		b = append(b, flags)
		b = append(b, u64(uint64(m.LSN))...)
		str(m.Prefix)
		b = append(b, u32(uint32(len(m.Content)))...)
		b = append(b, m.Content...)
	}
	return b, loose
}

// micros converts a time to microseconds since 2000-01-01 UTC, PostgreSQL's
// timestamp origin.
func micros(t time.Time) int64 {
	return t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()
}
