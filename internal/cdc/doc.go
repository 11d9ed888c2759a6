// Package cdc reads a PostgreSQL database's changes through logical
// replication; its subpackage apply applies them to another database
// (datasync sync).
//
// The protocol layer is github.com/jackc/pglogrepl, behind thin
// conversions to this package's types:
//
//   - LSN parses and formats WAL positions.
//   - ReplConn is a replication connection: IDENTIFY_SYSTEM,
//     CREATE_REPLICATION_SLOT … LOGICAL pgoutput (optionally exporting a
//     snapshot), DROP_REPLICATION_SLOT, START_REPLICATION with pgoutput's
//     proto_version and publication_names, the XLogData and keepalive
//     messages of the stream, and standby status updates, each through
//     pglogrepl's function of the same name.
//   - Decode decodes pgoutput's messages (protocol version 1) with
//     pglogrepl.Parse: Begin, Commit, Origin, Relation, Type, Insert,
//     Update, Delete, Truncate and Message. pglogrepl's parsers trust their
//     input, so Decode checks a message's framing first: it returns an
//     error, never panics, on malformed input.
//
// Stream builds on them: it yields source transactions in commit order,
// keeps the relation cache, answers keepalives, reports as flushed only what
// its caller acknowledged as applied, and reconnects with backoff. A
// transaction with more than StreamConfig.MaxTxChanges changes is yielded in
// parts numbered from 0 (Transaction.Part, Transaction.More), so its size is
// not bounded by memory: the stream holds at most the part it is receiving
// and the parts and transactions waiting for its caller (at most
// StreamConfig.BufferChanges changes). After a reconnect in the middle of a
// transaction the server sends it again, and the stream yields it again
// from Part 0.
package cdc
