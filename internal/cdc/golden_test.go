package cdc

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type goldenCase struct {
	name  string
	index int // line of testdata/stream.hex, from 0
	want  Message
}

// goldenCases are messages of testdata/stream.hex, captured from
// PostgreSQL 15 by TestCaptureFromServer -capture, decoded by hand.
var goldenCases = []goldenCase{
	{name: "begin", index: 0, want: &Begin{FinalLSN: 0x192C2E8, CommitTime: time.Date(2026, 11, 22, 2, 26, 7, 700103000, time.UTC), Xid: 726}},
	{name: "relation", index: 1, want: &Relation{ID: 16391, Namespace: "public", Name: "items", ReplicaIdentity: ReplicaIdentityDefault, Columns: []Column{
		{Key: true, Name: "id", TypeOID: 23, TypeMod: -1},
		{Key: false, Name: "name", TypeOID: 25, TypeMod: -1},
		{Key: false, Name: "qty", TypeOID: 23, TypeMod: -1},
		{Key: false, Name: "note", TypeOID: 25, TypeMod: -1},
	}}},
	{name: "insert with null", index: 2, want: &Insert{RelationID: 16391, New: Tuple{
		{Kind: 't', Data: []byte("1")}, {Kind: 't', Data: []byte("apple")}, {Kind: 'n'}, {Kind: 't', Data: []byte("short")},
	}}},
	{name: "commit", index: 3, want: &Commit{CommitLSN: 0x192C2E8, EndLSN: 0x192C318, CommitTime: time.Date(2026, 11, 22, 2, 26, 7, 700103000, time.UTC)}},
	{name: "update without old tuple", index: 5, want: &Update{RelationID: 16391, New: Tuple{
		{Kind: 't', Data: []byte("1")}, {Kind: 't', Data: []byte("apple")}, {Kind: 't', Data: []byte("5")}, {Kind: 't', Data: []byte("short")},
	}}},
	{name: "update changing the key", index: 8, want: &Update{RelationID: 16391, OldKind: TupleKey,
		Old: Tuple{{Kind: 't', Data: []byte("1")}, {Kind: 'n'}, {Kind: 'n'}, {Kind: 'n'}},
		New: Tuple{{Kind: 't', Data: []byte("2")}, {Kind: 't', Data: []byte("apple")}, {Kind: 't', Data: []byte("5")}, {Kind: 't', Data: []byte("short")}},
	}},
	{name: "delete by key", index: 11, want: &Delete{RelationID: 16391, OldKind: TupleKey,
		Old: Tuple{{Kind: 't', Data: []byte("2")}, {Kind: 'n'}, {Kind: 'n'}, {Kind: 'n'}}}},
	{name: "update with old row", index: 18, want: &Update{RelationID: 16398, OldKind: TupleOld,
		Old: Tuple{{Kind: 't', Data: []byte("1")}, {Kind: 't', Data: []byte("a")}},
		New: Tuple{{Kind: 't', Data: []byte("1")}, {Kind: 't', Data: []byte("b")}}}},
	{name: "type", index: 24, want: &Type{OID: 16386, Namespace: "public", Name: "mood"}},
	{name: "insert of toasted value", index: 29, want: &Insert{RelationID: 16391, New: Tuple{
		{Kind: 't', Data: []byte("3")}, {Kind: 't', Data: []byte("pear")}, {Kind: 't', Data: []byte("1")},
		{Kind: 't', Data: []byte(strings.Repeat("toast", 2000))},
	}}},
	{name: "update leaving toast unchanged", index: 32, want: &Update{RelationID: 16391, New: Tuple{
		{Kind: 't', Data: []byte("3")}, {Kind: 't', Data: []byte("pear")}, {Kind: 't', Data: []byte("2")}, {Kind: 'u'},
	}}},
	{name: "truncate", index: 38, want: &Truncate{RelationIDs: []uint32{16391, 16403}}},
	{name: "origin", index: 41, want: &Origin{CommitLSN: 0xAB, Name: "upstream"}},
}

func describe(m Message) string { return fmt.Sprintf("%+v", m) }

func describeDiff(got, want Message) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	return describe(want)
}

// TestDecodeBuilt covers what the capture does not: messages sent only with
// options (binary values, logical messages) and malformed input.
func TestDecodeBuilt(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		want    Message
		wantErr bool
	}{
		{
			name: "binary value",
			data: cat("I", u32(7), "N", u16(2), "b", u32(4), []byte{0, 0, 0, 42}, "n"),
			want: &Insert{RelationID: 7, New: Tuple{{Kind: ValueBinary, Data: []byte{0, 0, 0, 42}}, {Kind: ValueNull}}},
		},
		{
			name: "logical message",
			data: cat("M", []byte{1}, u64(0x10), "pfx\x00", u32(5), "hello"),
			want: &LogicalMessage{Transactional: true, LSN: 0x10, Prefix: "pfx", Content: []byte("hello")},
		},
		{
			name: "truncate cascade restart identity",
			data: cat("T", u32(2), []byte{3}, u32(1), u32(2)),
			want: &Truncate{Options: TruncateCascade | TruncateRestartIdentity, RelationIDs: []uint32{1, 2}},
		},
		{name: "empty", data: nil, wantErr: true},
		{name: "unknown type", data: []byte("Z"), wantErr: true},
		{name: "trailing bytes", data: cat("Y", u32(1), "a\x00b\x00", "x"), wantErr: true},
		{name: "unterminated string", data: cat("Y", u32(1), "abc"), wantErr: true},
		{name: "value longer than message", data: cat("I", u32(7), "N", u16(1), "t", u32(100), "ab"), wantErr: true},
		{name: "negative value length", data: cat("I", u32(7), "N", u16(1), "t", u32(0xFFFFFFFF)), wantErr: true},
		{name: "unknown value kind", data: cat("I", u32(7), "N", u16(1), "x"), wantErr: true},
		{name: "insert without N", data: cat("I", u32(7), "K", u16(0)), wantErr: true},
		{name: "update with bad tuple kind", data: cat("U", u32(7), "X", u16(0)), wantErr: true},
		{name: "delete with new tuple", data: cat("D", u32(7), "N", u16(0)), wantErr: true},
		{name: "huge column count", data: cat("R", u32(1), "s\x00t\x00d", u16(0x7FFF)), wantErr: true},
		{name: "huge truncate count", data: cat("T", u32(0xFFFFFFFF), []byte{0}), wantErr: true},
		{name: "huge tuple count", data: cat("I", u32(7), "N", u16(0x7FFF), "n"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.data)
			if tc.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %v, %v, want an error wrapping ErrMalformed", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if diff := describeDiff(got, tc.want); diff != "" {
				t.Errorf("got %s, want %s", describe(got), diff)
			}
		})
	}
}

// cat joins strings and byte slices into one message.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
func u64(v uint64) []byte { return append(u32(uint32(v>>32)), u32(uint32(v))...) }
