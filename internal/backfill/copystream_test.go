package backfill

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
)

// encodeCopy builds a binary COPY stream of rows; a nil field is NULL.
func encodeCopy(rows [][][]byte) []byte {
	var b bytes.Buffer
	b.Write(copySignature)
	b.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	for _, r := range rows {
		_ = binary.Write(&b, binary.BigEndian, int16(len(r)))
		for _, f := range r {
			if f == nil {
				_ = binary.Write(&b, binary.BigEndian, int32(-1))
				continue
			}
			_ = binary.Write(&b, binary.BigEndian, int32(len(f)))
			b.Write(f)
		}
	}
	_ = binary.Write(&b, binary.BigEndian, int16(-1))
	return b.Bytes()
}

// feed writes data to t in chunks of size n.
func feed(t *rowTracker, data []byte, n int) error {
	for len(data) > 0 {
		k := min(n, len(data))
		if _, err := t.Write(data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	return t.finish()
}

func TestRowTracker(t *testing.T) {
	rows := [][][]byte{
		{[]byte("a"), []byte{0, 0, 0, 1}, nil},
		{[]byte("b"), []byte{0, 0, 0, 2}, []byte("big value")},
		{[]byte(""), []byte{0, 0, 0, 3}, []byte{}},
	}
	stream := encodeCopy(rows)
	withExtension := slices.Concat(copySignature, []byte{0, 0, 0, 0, 0, 0, 0, 3, 'x', 'y', 'z'}, stream[19:])
	tests := []struct {
		name     string
		data     []byte
		fields   int
		key      []int
		wantRows int64
		wantKey  [][]byte
		wantErr  bool
	}{
		{name: "composite key", data: stream, fields: 3, key: []int{0, 1}, wantRows: 3, wantKey: [][]byte{{}, {0, 0, 0, 3}}},
		{name: "key in the middle", data: stream, fields: 3, key: []int{1}, wantRows: 3, wantKey: [][]byte{{0, 0, 0, 3}}},
		{name: "header extension", data: withExtension, fields: 3, key: []int{0}, wantRows: 3, wantKey: [][]byte{{}}},
		{name: "no rows", data: encodeCopy(nil), fields: 2, key: []int{0}, wantRows: 0},
		{name: "nothing at all", data: nil, fields: 2, key: []int{0}, wantRows: 0},
		{name: "wrong field count", data: stream, fields: 2, key: []int{0}, wantErr: true},
		{name: "bad signature", data: append([]byte("PGCOPY\nXX"), stream[9:]...), fields: 3, key: []int{0}, wantErr: true},
		{name: "cut in a field", data: stream[:len(stream)-8], fields: 3, key: []int{0}, wantErr: true},
		{name: "bytes after the trailer", data: append(slices.Clone(stream), 0), fields: 3, key: []int{0}, wantErr: true},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 64 << 10} {
			t.Run(tt.name, func(t *testing.T) {
				var out bytes.Buffer
				tr := newRowTracker(&out, tt.fields, tt.key)
				err := feed(tr, tt.data, chunk)
				if tt.wantErr {
					if !errors.Is(err, errCopyFormat) {
						t.Fatalf("chunks of %d: got error %v, want errCopyFormat", chunk, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("chunks of %d: %v", chunk, err)
				}
				if tr.rows != tt.wantRows {
					t.Errorf("chunks of %d: got %d rows, want %d", chunk, tr.rows, tt.wantRows)
				}
				if got := tr.lastKey(); !slices.EqualFunc(got, tt.wantKey, bytes.Equal) || (got == nil) != (tt.wantKey == nil) {
					t.Errorf("chunks of %d: got last key %q, want %q", chunk, got, tt.wantKey)
				}
				if got := tr.lastKey(); len(got) > 0 && got[0] == nil {
					t.Errorf("chunks of %d: got a NULL key field for an empty value", chunk)
				}
				if !bytes.Equal(out.Bytes(), tt.data) {
					t.Errorf("chunks of %d: got %d bytes passed on, want the %d bytes unchanged", chunk, out.Len(), len(tt.data))
				}
			})
		}
	}
}

func TestRowTrackerPassesWriteErrors(t *testing.T) {
	want := errors.New("disk full")
	tr := newRowTracker(failWriter{want}, 1, []int{0})
	if _, err := tr.Write(encodeCopy(nil)); !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// FuzzRowTracker feeds arbitrary streams: the tracker must never panic,
// and a stream it accepts must be passed on unchanged.
func FuzzRowTracker(f *testing.F) {
	f.Add(encodeCopy([][][]byte{{[]byte("k"), nil}, {[]byte("kk"), []byte("v")}}), 2, 1)
	f.Add(encodeCopy(nil), 1, 1)
	f.Add([]byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\xff\xff\xff\xff"), 1, 7)
	f.Fuzz(func(t *testing.T, data []byte, fields, chunk int) {
		if fields < 1 || fields > 1000 || chunk < 1 {
			return
		}
		var out bytes.Buffer
		tr := newRowTracker(&out, fields, []int{fields - 1})
		if err := feed(tr, data, chunk); err != nil {
			return
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("accepted stream passed on changed")
		}
		if tr.rows > 0 && len(tr.lastKey()) != 1 {
			t.Fatalf("got %d key fields, want 1", len(tr.lastKey()))
		}
	})
}

var _ io.Writer = (*rowTracker)(nil)
