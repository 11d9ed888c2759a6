package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
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

// pgEpoch is the origin of PostgreSQL's timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// pgTime converts microseconds since 2000-01-01 UTC to a time.
func pgTime(us int64) time.Time {
	return pgEpoch.Add(time.Duration(us) * time.Microsecond)
}

// pgMicros converts a time to microseconds since 2000-01-01 UTC.
func pgMicros(t time.Time) int64 {
	return t.Sub(pgEpoch).Microseconds()
}

// Decode decodes one pgoutput message (protocol version 1), the payload of an
// XLogData message. The returned message may refer to data, which must not be
// changed afterwards. Decode never panics: a truncated, overlong or unknown
// message returns an error wrapping ErrMalformed.
func Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("decode: empty message: %w", ErrMalformed)
	}
	r := &reader{buf: data[1:]}
	var m Message
	switch data[0] {
	case 'B':
		m = &Begin{FinalLSN: LSN(r.uint64()), CommitTime: pgTime(int64(r.uint64())), Xid: r.uint32()}
	case 'C':
		m = &Commit{Flags: r.uint8(), CommitLSN: LSN(r.uint64()), EndLSN: LSN(r.uint64()),
			CommitTime: pgTime(int64(r.uint64()))}
	case 'O':
		m = &Origin{CommitLSN: LSN(r.uint64()), Name: r.string()}
	case 'R':
		m = r.relation()
	case 'Y':
		m = &Type{OID: r.uint32(), Namespace: r.string(), Name: r.string()}
	case 'I':
		ins := &Insert{RelationID: r.uint32()}
		r.expect('N')
		ins.New = r.tuple()
		m = ins
	case 'U':
		m = r.update()
	case 'D':
		del := &Delete{RelationID: r.uint32(), OldKind: r.uint8()}
		if del.OldKind != TupleKey && del.OldKind != TupleOld {
			r.fail(fmt.Sprintf("delete: old tuple kind %q, want 'K' or 'O'", del.OldKind))
		}
		del.Old = r.tuple()
		m = del
	case 'T':
		m = r.truncate()
	case 'M':
		lm := &LogicalMessage{Transactional: r.uint8()&1 != 0, LSN: LSN(r.uint64()), Prefix: r.string()}
		n := r.uint32()
		lm.Content = r.bytes(int64(n))
		m = lm
	default:
		return nil, fmt.Errorf("decode: unknown message type %q: %w", data[0], ErrMalformed)
	}
	if r.err == nil && len(r.buf) > 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.buf)))
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode %q message: %w", data[0], r.err)
	}
	return m, nil
}

func (r *reader) relation() *Relation {
	rel := &Relation{ID: r.uint32(), Namespace: r.string(), Name: r.string(), ReplicaIdentity: r.uint8()}
	n := int(r.int16())
	if n < 0 {
		r.fail("negative column count")
		return rel
	}
	// Each column takes at least 10 bytes: refuse counts the data cannot hold
	// before allocating for them.
	if n*10 > len(r.buf) {
		r.fail(fmt.Sprintf("%d columns do not fit in %d bytes", n, len(r.buf)))
		return rel
	}
	rel.Columns = make([]Column, n)
	for i := range rel.Columns {
		rel.Columns[i] = Column{Key: r.uint8()&1 != 0, Name: r.string(), TypeOID: r.uint32(), TypeMod: int32(r.uint32())}
	}
	return rel
}

func (r *reader) update() *Update {
	u := &Update{RelationID: r.uint32()}
	switch k := r.uint8(); k {
	case TupleKey, TupleOld:
		u.OldKind = k
		u.Old = r.tuple()
		r.expect('N')
	case 'N':
	default:
		r.fail(fmt.Sprintf("update: tuple kind %q, want 'K', 'O' or 'N'", k))
	}
	u.New = r.tuple()
	return u
}

func (r *reader) truncate() *Truncate {
	n := r.uint32()
	t := &Truncate{Options: r.uint8()}
	if int64(n)*4 != int64(len(r.buf)) {
		r.fail(fmt.Sprintf("truncate: %d relations in %d bytes", n, len(r.buf)))
		return t
	}
	t.RelationIDs = make([]uint32, n)
	for i := range t.RelationIDs {
		t.RelationIDs[i] = r.uint32()
	}
	return t
}

func (r *reader) tuple() Tuple {
	n := int(r.int16())
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.buf) {
		r.fail(fmt.Sprintf("tuple: %d columns in %d bytes", n, len(r.buf)))
		return nil
	}
	t := make(Tuple, n)
	for i := range t {
		k := r.uint8()
		switch k {
		case ValueNull, ValueUnchanged:
			t[i] = Value{Kind: k}
		case ValueText, ValueBinary:
			l := int32(r.uint32())
			if l < 0 {
				r.fail(fmt.Sprintf("tuple column %d: negative length", i))
				return nil
			}
			t[i] = Value{Kind: k, Data: r.bytes(int64(l))}
		default:
			if r.err == nil {
				r.fail(fmt.Sprintf("tuple column %d: unknown kind %q", i, k))
			}
		}
		if r.err != nil {
			return nil
		}
	}
	return t
}

// reader consumes big-endian fields from a message. The first failure is kept
// in err; later reads return zero values.
type reader struct {
	buf []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", msg, ErrMalformed)
	}
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if len(r.buf) < n {
		r.fail(fmt.Sprintf("truncated: need %d bytes, have %d", n, len(r.buf)))
		return false
	}
	return true
}

// take consumes n bytes, nil when fewer are left.
func (r *reader) take(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.buf[:n]
	r.buf = r.buf[n:]
	return v
}

func (r *reader) uint8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) bytes(n int64) []byte {
	if r.err != nil {
		return nil
	}
	if n > int64(len(r.buf)) {
		r.fail(fmt.Sprintf("truncated: need %d bytes, have %d", n, len(r.buf)))
		return nil
	}
	v := r.buf[:n:n]
	r.buf = r.buf[n:]
	return v
}

// string reads a NUL-terminated string.
func (r *reader) string() string {
	if r.err != nil {
		return ""
	}
	for i, b := range r.buf {
		if b == 0 {
			s := string(r.buf[:i])
			r.buf = r.buf[i+1:]
			return s
		}
	}
	r.fail("unterminated string")
	return ""
}

func (r *reader) expect(b byte) {
	if got := r.uint8(); r.err == nil && got != b {
		r.fail(fmt.Sprintf("got tuple kind %q, want %q", got, b))
	}
}
