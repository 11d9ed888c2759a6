package cdc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Message is one decoded pgoutput message: *Begin, *Commit, *Origin,
// *Relation, *Type, *Insert, *Update, *Delete, *Truncate or *LogicalMessage.
type Message interface {
	// Kind returns the message's type byte on the wire, such as 'B' for Begin.
	Kind() byte
}

// Begin starts a transaction.
type Begin struct {
	// FinalLSN is the LSN of the transaction's commit record.
	FinalLSN LSN
	// CommitTime is when the transaction committed on the source.
	CommitTime time.Time
	// Xid is the source transaction id.
	Xid uint32
}

// Commit ends a transaction.
type Commit struct {
	// Flags is unused by the server so far and always 0.
	Flags uint8
	// CommitLSN is the LSN of the commit record.
	CommitLSN LSN
	// EndLSN is the LSN just past the commit record: the position to confirm
	// once the transaction is applied.
	EndLSN LSN
	// CommitTime is when the transaction committed on the source.
	CommitTime time.Time
}

// Origin names the replication origin a transaction came from.
type Origin struct {
	// CommitLSN is the commit LSN on the origin server.
	CommitLSN LSN
	// Name is the origin's name.
	Name string
}

// Replica identity settings carried by a Relation message.
const (
	ReplicaIdentityDefault = 'd' // the primary key
	ReplicaIdentityNothing = 'n' // no old values: updates and deletes cannot be replicated
	ReplicaIdentityFull    = 'f' // the whole old row
	ReplicaIdentityIndex   = 'i' // the columns of a chosen unique index
)

// Relation describes a table before the first change to it in a session, and
// again whenever its definition changed.
type Relation struct {
	// ID is the table's OID; changes refer to the table by it.
	ID uint32
	// Namespace is the schema name; "pg_catalog" is sent as "".
	Namespace string
	// Name is the table name.
	Name string
	// ReplicaIdentity is one of the ReplicaIdentity constants.
	ReplicaIdentity byte
	// Columns are the published columns in table order.
	Columns []Column
}

// Column is one column of a Relation.
type Column struct {
	// Key reports whether the column is part of the replica identity key.
	Key bool
	// Name is the column name.
	Name string
	// TypeOID is the OID of the column's data type.
	TypeOID uint32
	// TypeMod is the type modifier (atttypmod), -1 when none.
	TypeMod int32
}

// Type describes a data type that is not built in, before a Relation that
// uses it.
type Type struct {
	// OID is the type's OID.
	OID uint32
	// Namespace is the schema name; "pg_catalog" is sent as "".
	Namespace string
	// Name is the type name.
	Name string
}

// Tuple kinds that say what an old tuple holds in Update and Delete.
const (
	TupleKey = 'K' // the replica identity key columns only
	TupleOld = 'O' // the whole old row (REPLICA IDENTITY FULL)
)

// Insert is a new row.
type Insert struct {
	// RelationID refers to a Relation received before.
	RelationID uint32
	// New is the inserted row.
	New Tuple
}

// Update is a changed row.
type Update struct {
	// RelationID refers to a Relation received before.
	RelationID uint32
	// OldKind is TupleKey, TupleOld, or 0 when no old tuple was sent: the
	// key did not change (REPLICA IDENTITY DEFAULT or USING INDEX) and New
	// carries it.
	OldKind byte
	// Old is the old key or row, nil when OldKind is 0.
	Old Tuple
	// New is the row after the update. Columns whose TOASTed value did not
	// change hold ValueUnchanged.
	New Tuple
}

// Delete is a removed row.
type Delete struct {
	// RelationID refers to a Relation received before.
	RelationID uint32
	// OldKind is TupleKey or TupleOld.
	OldKind byte
	// Old is the deleted row's key (TupleKey) or whole row (TupleOld).
	Old Tuple
}

// Truncate options.
const (
	TruncateCascade         = 1
	TruncateRestartIdentity = 2
)

// Truncate empties one or more tables.
type Truncate struct {
	// Options is a bit set of TruncateCascade and TruncateRestartIdentity.
	Options uint8
	// RelationIDs are the truncated tables.
	RelationIDs []uint32
}

// LogicalMessage is a message written with pg_logical_emit_message; the
// server sends them only when asked to with the messages option.
type LogicalMessage struct {
	// Transactional reports whether the message belongs to a transaction.
	Transactional bool
	// LSN is the message's position.
	LSN LSN
	// Prefix is the prefix given to pg_logical_emit_message.
	Prefix string
	// Content is the message body.
	Content []byte
}

// Kind implements Message.
func (*Begin) Kind() byte { return 'B' }

// Kind implements Message.
func (*Commit) Kind() byte { return 'C' }

// Kind implements Message.
func (*Origin) Kind() byte { return 'O' }

// Kind implements Message.
func (*Relation) Kind() byte { return 'R' }

// Kind implements Message.
func (*Type) Kind() byte { return 'Y' }

// Kind implements Message.
func (*Insert) Kind() byte { return 'I' }

// Kind implements Message.
func (*Update) Kind() byte { return 'U' }

// Kind implements Message.
func (*Delete) Kind() byte { return 'D' }

// Kind implements Message.
func (*Truncate) Kind() byte { return 'T' }

// Kind implements Message.
func (*LogicalMessage) Kind() byte { return 'M' }

// Value kinds in a Tuple.
const (
	ValueNull      = 'n' // SQL NULL
	ValueUnchanged = 'u' // a TOASTed value the update did not change: not sent
	ValueText      = 't' // the value in text format
	ValueBinary    = 'b' // the value in binary format
)

// Value is one column of a Tuple.
type Value struct {
	// Kind is one of the Value kind constants.
	Kind byte
	// Data is the value for ValueText and ValueBinary, nil otherwise.
	Data []byte
}

// Tuple is a row: one Value per column of its Relation, in column order.
type Tuple []Value

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed pgoutput message")

// Decode decodes one pgoutput message (protocol version 1), the payload of an
// XLogData message, with pglogrepl's parser. The returned message may refer
// to data, which must not be changed afterwards.
//
// pglogrepl's parsers trust their input: they index past the end of a
// truncated message and allocate whatever length a value claims. So the
// message's framing is checked first (every length within the message,
// every byte accounted for, the tuple and kind bytes known), and Decode
// never panics: a truncated, overlong or unknown message returns an error
// wrapping ErrMalformed.
func Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("decode: empty message: %w", ErrMalformed)
	}
	if err := checkFrame(data); err != nil {
		return nil, fmt.Errorf("decode %q message: %w", data[0], err)
	}
	pm, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("decode %q message: %w: %w", data[0], err, ErrMalformed)
	}
	return convert(pm)
}

// errParserPanic marks a message the frame check let through and pglogrepl
// could not parse: a gap in checkFrame, which the fuzz test looks for.
var errParserPanic = errors.New("pglogrepl parser panicked")

func parse(data []byte) (m pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w: %v", errParserPanic, r)
		}
	}()
	return pglogrepl.Parse(data)
}

// convert turns a pglogrepl message into this package's type.
func convert(pm pglogrepl.Message) (Message, error) {
	switch m := pm.(type) {
	case *pglogrepl.BeginMessage:
		return &Begin{FinalLSN: LSN(m.FinalLSN), CommitTime: m.CommitTime.UTC(), Xid: m.Xid}, nil
	case *pglogrepl.CommitMessage:
		return &Commit{Flags: m.Flags, CommitLSN: LSN(m.CommitLSN), EndLSN: LSN(m.TransactionEndLSN), CommitTime: m.CommitTime.UTC()}, nil
	case *pglogrepl.OriginMessage:
		return &Origin{CommitLSN: LSN(m.CommitLSN), Name: m.Name}, nil
	case *pglogrepl.RelationMessage:
		rel := &Relation{ID: m.RelationID, Namespace: m.Namespace, Name: m.RelationName,
			ReplicaIdentity: m.ReplicaIdentity, Columns: make([]Column, len(m.Columns))}
		for i, c := range m.Columns {
			rel.Columns[i] = Column{Key: c.Flags&1 != 0, Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier}
		}
		return rel, nil
	case *pglogrepl.TypeMessage:
		return &Type{OID: m.DataType, Namespace: m.Namespace, Name: m.Name}, nil
	case *pglogrepl.InsertMessage:
		return &Insert{RelationID: m.RelationID, New: tuple(m.Tuple)}, nil
	case *pglogrepl.UpdateMessage:
		return &Update{RelationID: m.RelationID, OldKind: m.OldTupleType, Old: tuple(m.OldTuple), New: tuple(m.NewTuple)}, nil
	case *pglogrepl.DeleteMessage:
		return &Delete{RelationID: m.RelationID, OldKind: m.OldTupleType, Old: tuple(m.OldTuple)}, nil
	case *pglogrepl.TruncateMessage:
		return &Truncate{Options: m.Option, RelationIDs: m.RelationIDs}, nil
	case *pglogrepl.LogicalDecodingMessage:
		return &LogicalMessage{Transactional: m.Transactional, LSN: LSN(m.LSN), Prefix: m.Prefix, Content: m.Content}, nil
	}
	return nil, fmt.Errorf("decode: unexpected message %T: %w", pm, ErrMalformed)
}

// tuple converts pglogrepl's tuple data; nil stays nil.
func tuple(td *pglogrepl.TupleData) Tuple {
	if td == nil {
		return nil
	}
	t := make(Tuple, len(td.Columns))
	for i, c := range td.Columns {
		t[i] = Value{Kind: c.DataType}
		if c.DataType == ValueText || c.DataType == ValueBinary {
			t[i].Data = c.Data
		}
	}
	return t
}

// checkFrame walks a message's layout without decoding it: every field and
// value lies within data, nothing follows the last one, and every kind byte
// is one the protocol defines.
func checkFrame(data []byte) error {
	r := &frame{buf: data[1:]}
	switch data[0] {
	case 'B':
		r.skip(8 + 8 + 4)
	case 'C':
		r.skip(1 + 8 + 8 + 8)
	case 'O':
		r.skip(8)
		r.str()
	case 'R':
		r.skip(4)
		r.str()
		r.str()
		r.skip(1)
		n := r.int16()
		if n < 0 {
			r.fail("negative column count")
		}
		for i := 0; i < n && r.err == nil; i++ {
			r.skip(1)
			r.str()
			r.skip(4 + 4)
		}
	case 'Y':
		r.skip(4)
		r.str()
		r.str()
	case 'I':
		r.skip(4)
		r.kind("insert", 'N')
		r.tuple()
	case 'U':
		r.skip(4)
		if k := r.kind("update", TupleKey, TupleOld, 'N'); k != 'N' {
			r.tuple()
			r.kind("update", 'N')
		}
		r.tuple()
	case 'D':
		r.skip(4)
		r.kind("delete", TupleKey, TupleOld)
		r.tuple()
	case 'T':
		n := r.uint32()
		r.skip(1)
		if r.err == nil && int64(n)*4 != int64(len(r.buf)) {
			r.fail(fmt.Sprintf("truncate: %d relations in %d bytes", n, len(r.buf)))
		}
		r.skip(int(n) * 4)
	case 'M':
		r.skip(1 + 8)
		r.str()
		r.skip(int(r.uint32()))
	default:
		return fmt.Errorf("unknown message type: %w", ErrMalformed)
	}
	if r.err == nil && len(r.buf) > 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.buf)))
	}
	return r.err
}

// frame consumes a message's fields for checkFrame. The first failure is
// kept in err; later reads do nothing.
type frame struct {
	buf []byte
	err error
}

func (r *frame) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", msg, ErrMalformed)
	}
}

func (r *frame) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.buf) {
		r.fail(fmt.Sprintf("truncated: need %d bytes, have %d", n, len(r.buf)))
		return nil
	}
	v := r.buf[:n]
	r.buf = r.buf[n:]
	return v
}

func (r *frame) skip(n int) { r.take(n) }

func (r *frame) int16() int {
	if b := r.take(2); b != nil {
		return int(int16(binary.BigEndian.Uint16(b)))
	}
	return 0
}

func (r *frame) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// str skips a NUL-terminated string.
func (r *frame) str() {
	if r.err != nil {
		return
	}
	i := bytes.IndexByte(r.buf, 0)
	if i < 0 {
		r.fail("unterminated string")
		return
	}
	r.buf = r.buf[i+1:]
}

// kind reads a kind byte and checks it is one of want.
func (r *frame) kind(what string, want ...byte) byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	if bytes.IndexByte(want, b[0]) < 0 {
		r.fail(fmt.Sprintf("%s: tuple kind %q, want one of %q", what, b[0], want))
		return 0
	}
	return b[0]
}

func (r *frame) tuple() {
	n := r.int16()
	if n < 0 {
		r.fail("tuple: negative column count")
	}
	for i := 0; i < n && r.err == nil; i++ {
		switch k := r.kind("tuple column", ValueNull, ValueUnchanged, ValueText, ValueBinary); k {
		case ValueText, ValueBinary:
			l := int32(r.uint32())
			if l < 0 {
				r.fail(fmt.Sprintf("tuple column %d: negative length", i))
			}
			r.skip(int(l))
		}
	}
}
