package backfill

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errCopyFormat is wrapped by every error about a malformed binary COPY
// stream.
var errCopyFormat = errors.New("malformed binary COPY stream")

// copySignature starts every binary COPY stream ("File Formats" in the COPY
// documentation).
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

// headerLen is the signature, the flags field and the extension length.
const headerLen = 11 + 4 + 4

type copyState int

const (
	stHeader copyState = iota
	stExtension
	stFieldCount
	stFieldLen
	stFieldData
	stTrailer
)

// rowTracker follows a binary COPY stream on its way from the source to the
// target without decoding it: it counts the rows and keeps the raw bytes of
// the last row's key fields, so that the batch's last key can be
// checkpointed. Rows pass through in whatever chunks the writer is given.
type rowTracker struct {
	next   io.Writer
	fields int   // fields per row
	slot   []int // slot[field] is the field's index in the key, or -1

	rows int64
	last [][]byte // key fields of the last complete row
	cur  [][]byte // key fields of the row being read

	state     copyState
	acc       []byte // bytes of the fixed-size item being read
	remaining int    // bytes left in the extension or field data
	field     int    // field being read
}

// newRowTracker tracks a stream of rows of fields fields whose key fields
// are at the indexes keyFields (in key order), passing the bytes on to next.
func newRowTracker(next io.Writer, fields int, keyFields []int) *rowTracker {
	slot := make([]int, fields)
	for i := range slot {
		slot[i] = -1
	}
	for k, f := range keyFields {
		slot[f] = k
	}
	return &rowTracker{
		next:   next,
		fields: fields,
		slot:   slot,
		last:   make([][]byte, len(keyFields)),
		cur:    make([][]byte, len(keyFields)),
		acc:    make([]byte, 0, headerLen),
	}
}

// take moves bytes of p into acc until it holds n; it reports whether it
// does and returns the rest of p.
func (t *rowTracker) take(p []byte, n int) (bool, []byte) {
	k := min(n-len(t.acc), len(p))
	t.acc = append(t.acc, p[:k]...)
	return len(t.acc) == n, p[k:]
}

// skip consumes up to t.remaining bytes of p, appending them to *keep
// unless keep is nil; it reports whether the item is complete and returns
// the rest of p.
func (t *rowTracker) skip(p []byte, keep *[]byte) (bool, []byte) {
	k := min(t.remaining, len(p))
	if keep != nil {
		*keep = append(*keep, p[:k]...)
	}
	t.remaining -= k
	return t.remaining == 0, p[k:]
}

func (t *rowTracker) Write(p []byte) (int, error) {
	if err := t.parse(p); err != nil {
		return 0, err
	}
	if _, err := t.next.Write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *rowTracker) parse(p []byte) error {
	for len(p) > 0 {
		var full bool
		switch t.state {
		case stHeader:
			if full, p = t.take(p, headerLen); !full {
				return nil
			}
			if !bytes.Equal(t.acc[:11], copySignature) {
				return fmt.Errorf("%w: bad signature", errCopyFormat)
			}
			ext := int32(binary.BigEndian.Uint32(t.acc[15:19]))
			if ext < 0 {
				return fmt.Errorf("%w: negative header extension length", errCopyFormat)
			}
			t.acc = t.acc[:0]
			t.remaining = int(ext)
			t.state = stExtension
			if ext == 0 {
				t.state = stFieldCount
			}
		case stExtension:
			if full, p = t.skip(p, nil); full {
				t.state = stFieldCount
			}
		case stFieldCount:
			if full, p = t.take(p, 2); !full {
				return nil
			}
			n := int16(binary.BigEndian.Uint16(t.acc))
			t.acc = t.acc[:0]
			switch {
			case n == -1:
				t.state = stTrailer
			case int(n) != t.fields:
				return fmt.Errorf("%w: row %d has %d fields, want %d", errCopyFormat, t.rows+1, n, t.fields)
			case n == 0:
				t.endRow()
			default:
				t.field = 0
				t.state = stFieldLen
			}
		case stFieldLen:
			if full, p = t.take(p, 4); !full {
				return nil
			}
			n := int32(binary.BigEndian.Uint32(t.acc))
			t.acc = t.acc[:0]
			s := t.slot[t.field]
			switch {
			case n == -1:
				if s >= 0 {
					t.cur[s] = nil
				}
				t.endField()
			case n < 0:
				return fmt.Errorf("%w: field length %d", errCopyFormat, n)
			default:
				if s >= 0 {
					// Non-nil even when empty: nil stands for NULL.
					if t.cur[s] == nil {
						t.cur[s] = make([]byte, 0, n)
					}
					t.cur[s] = t.cur[s][:0]
				}
				t.remaining = int(n)
				t.state = stFieldData
				if n == 0 {
					t.endField()
				}
			}
		case stFieldData:
			var keep *[]byte
			if s := t.slot[t.field]; s >= 0 {
				keep = &t.cur[s]
			}
			if full, p = t.skip(p, keep); full {
				t.endField()
			}
		case stTrailer:
			return fmt.Errorf("%w: %d bytes after the trailer", errCopyFormat, len(p))
		}
	}
	return nil
}

func (t *rowTracker) endField() {
	t.field++
	if t.field == t.fields {
		t.endRow()
		return
	}
	t.state = stFieldLen
}

func (t *rowTracker) endRow() {
	t.rows++
	t.last, t.cur = t.cur, t.last
	t.state = stFieldCount
}

// finish checks that the stream ended with its trailer, or was empty.
func (t *rowTracker) finish() error {
	if t.state != stTrailer && !(t.state == stHeader && len(t.acc) == 0) {
		return fmt.Errorf("%w: stream ends inside a row", errCopyFormat)
	}
	return nil
}

// lastKey returns the key fields of the last row, or nil when there was no
// row.
func (t *rowTracker) lastKey() [][]byte {
	if t.rows == 0 {
		return nil
	}
	return t.last
}
