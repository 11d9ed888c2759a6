package cdc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/strangler-fig/strangler/internal/dbconn"
)

// ReplConn is a replication connection to a source database
// (replication=database): it runs replication commands and, after
// StartReplication, carries the copy-both change stream.
//
// A ReplConn is not safe for concurrent use.
type ReplConn struct {
	conn  *pgconn.PgConn
	major int // server major version, such as 15
}

// SystemInfo is the answer to IDENTIFY_SYSTEM.
type SystemInfo struct {
	// SystemID identifies the cluster.
	SystemID string
	// Timeline is the current timeline.
	Timeline int32
	// XLogPos is the current WAL flush position.
	XLogPos LSN
	// DBName is the database the connection is bound to.
	DBName string
}

// SlotOptions tune CreateSlot.
type SlotOptions struct {
	// Temporary makes a slot that disappears when the connection closes.
	Temporary bool
	// ExportSnapshot exports a snapshot that shows the database exactly as
	// of the slot's consistent point. The snapshot stays valid only while
	// this connection runs no other command and stays open: import it (SET
	// TRANSACTION SNAPSHOT) in the copying transactions before running any
	// other command here.
	ExportSnapshot bool
}

// Slot is a newly created logical replication slot.
type Slot struct {
	// Name is the slot's name.
	Name string
	// ConsistentPoint is the LSN from which the slot's changes start: every
	// transaction that commits after it is streamed, none before.
	ConsistentPoint LSN
	// SnapshotName names the exported snapshot, "" unless asked for.
	SnapshotName string
	// Plugin is the output plugin, "pgoutput".
	Plugin string
}

// XLogData carries WAL data: for a logical slot, one pgoutput message.
type XLogData struct {
	// WALStart is the position of the data.
	WALStart LSN
	// WALEnd is the server's current end of WAL.
	WALEnd LSN
	// ServerTime is the server's clock when it sent the message.
	ServerTime time.Time
	// Data is the pgoutput message; Decode decodes it.
	Data []byte
}

// Keepalive is the primary keepalive message.
type Keepalive struct {
	// WALEnd is the position up to which the server has sent everything.
	WALEnd LSN
	// ServerTime is the server's clock when it sent the message.
	ServerTime time.Time
	// ReplyRequested asks for a standby status update right away, or the
	// server may end the connection after wal_sender_timeout.
	ReplyRequested bool
}

// StandbyStatus is a standby status update sent to the server.
type StandbyStatus struct {
	// Write is the position received.
	Write LSN
	// Flush is the position stored durably: the server may recycle WAL and
	// moves the slot's confirmed_flush_lsn up to it.
	Flush LSN
	// Apply is the position applied.
	Apply LSN
	// ReplyRequested asks the server to answer with a keepalive.
	ReplyRequested bool
}

// ErrReplicationEnded is returned by Receive when the server ended the
// stream (CopyDone), as it does when it shuts down.
var ErrReplicationEnded = errors.New("server ended replication")

// Connect opens a replication connection. connString is an ordinary
// PostgreSQL URL or keyword/value string; replication=database is added.
func Connect(ctx context.Context, connString string) (*ReplConn, error) {
	cfg, err := dbconn.ReplicationConfig("source", connString, "datasync sync")
	if err != nil {
		return nil, fmt.Errorf("replication connect: %w", err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connect: %w", err)
	}
	return &ReplConn{conn: conn, major: majorVersion(conn.ParameterStatus("server_version"))}, nil
}

// majorVersion reads the major version from server_version, such as
// "15.5 (Debian 15.5-0+deb12u1)".
func majorVersion(v string) int {
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	n, _ := strconv.Atoi(v[:end])
	return n
}

// PgConn returns the underlying connection.
func (c *ReplConn) PgConn() *pgconn.PgConn { return c.conn }

// Close closes the connection.
func (c *ReplConn) Close(ctx context.Context) error {
	return c.conn.Close(ctx)
}

// simple runs one replication command and returns its rows.
func (c *ReplConn) simple(ctx context.Context, op, sql string) ([][][]byte, error) {
	results, err := c.conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(results) == 0 {
		return nil, nil
	}
	return results[0].Rows, nil
}

// IdentifySystem runs IDENTIFY_SYSTEM.
func (c *ReplConn) IdentifySystem(ctx context.Context) (SystemInfo, error) {
	rows, err := c.simple(ctx, "identify system", "IDENTIFY_SYSTEM")
	if err != nil {
		return SystemInfo{}, err
	}
	if len(rows) != 1 || len(rows[0]) < 4 {
		return SystemInfo{}, fmt.Errorf("identify system: unexpected answer of %d rows", len(rows))
	}
	row := rows[0]
	tl, err := strconv.ParseInt(string(row[1]), 10, 32)
	if err != nil {
		return SystemInfo{}, fmt.Errorf("identify system: timeline: %w", err)
	}
	pos, err := ParseLSN(string(row[2]))
	if err != nil {
		return SystemInfo{}, fmt.Errorf("identify system: %w", err)
	}
	return SystemInfo{SystemID: string(row[0]), Timeline: int32(tl), XLogPos: pos, DBName: string(row[3])}, nil
}

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidSlotName reports whether name is usable as a replication slot name:
// lower-case letters, digits and underscores, at most 63 of them.
func ValidSlotName(name string) bool { return slotNameRE.MatchString(name) }

// CreateSlot creates a logical replication slot for pgoutput.
func (c *ReplConn) CreateSlot(ctx context.Context, name string, opts SlotOptions) (Slot, error) {
	if !ValidSlotName(name) {
		return Slot{}, fmt.Errorf("create slot %q: a slot name takes lower-case letters, digits and _ only", name)
	}
	var b strings.Builder
	b.WriteString("CREATE_REPLICATION_SLOT " + name)
	if opts.Temporary {
		b.WriteString(" TEMPORARY")
	}
	b.WriteString(" LOGICAL pgoutput")
	switch {
	case c.major >= 15 && opts.ExportSnapshot:
		b.WriteString(" (SNAPSHOT 'export')")
	case c.major >= 15:
		b.WriteString(" (SNAPSHOT 'nothing')")
	case opts.ExportSnapshot: // the syntax before PostgreSQL 15
		b.WriteString(" EXPORT_SNAPSHOT")
	default:
		b.WriteString(" NOEXPORT_SNAPSHOT")
	}
	rows, err := c.simple(ctx, "create slot "+name, b.String())
	if err != nil {
		return Slot{}, err
	}
	if len(rows) != 1 || len(rows[0]) < 4 {
		return Slot{}, fmt.Errorf("create slot %s: unexpected answer of %d rows", name, len(rows))
	}
	row := rows[0]
	cp, err := ParseLSN(string(row[1]))
	if err != nil {
		return Slot{}, fmt.Errorf("create slot %s: %w", name, err)
	}
	return Slot{Name: string(row[0]), ConsistentPoint: cp, SnapshotName: string(row[2]), Plugin: string(row[3])}, nil
}

// DropSlot drops a replication slot. With wait it waits for a connection
// still using the slot to let go of it instead of failing.
func (c *ReplConn) DropSlot(ctx context.Context, name string, wait bool) error {
	if !ValidSlotName(name) {
		return fmt.Errorf("drop slot %q: invalid slot name", name)
	}
	sql := "DROP_REPLICATION_SLOT " + name
	if wait {
		sql += " WAIT"
	}
	_, err := c.simple(ctx, "drop slot "+name, sql)
	return err
}

// StartReplication starts streaming the slot's changes from start, decoded
// by pgoutput (protocol version 1) for the given publications. After it the
// connection only carries Receive and SendStandbyStatus.
func (c *ReplConn) StartReplication(ctx context.Context, slot string, start LSN, publications []string) error {
	if !ValidSlotName(slot) {
		return fmt.Errorf("start replication %q: invalid slot name", slot)
	}
	if len(publications) == 0 {
		return fmt.Errorf("start replication %s: no publication", slot)
	}
	names := make([]string, len(publications))
	for i, p := range publications {
		names[i] = quoteIdent(p)
	}
	sql := fmt.Sprintf("START_REPLICATION SLOT %s LOGICAL %s (proto_version '1', publication_names %s)",
		slot, start, quoteLiteral(strings.Join(names, ",")))
	fe := c.conn.Frontend()
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		return fmt.Errorf("start replication %s: %w", slot, err)
	}
	for {
		msg, err := c.conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("start replication %s: %w", slot, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("start replication %s: %w", slot, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return fmt.Errorf("start replication %s: unexpected message %T", slot, msg)
		}
	}
}

// Receive waits for the next message of the stream: *XLogData or
// *Keepalive. It fails with an error wrapping context.DeadlineExceeded when
// ctx's deadline passes first; the connection stays usable then.
func (c *ReplConn) Receive(ctx context.Context) (any, error) {
	for {
		msg, err := c.conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			return parseCopyData(m.Data)
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("receive: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return nil, fmt.Errorf("receive: %w", ErrReplicationEnded)
		default:
			// Notices and parameter changes are not part of the stream.
		}
	}
}

// parseCopyData decodes a message of the copy-both stream. The data is
// copied, since the connection reuses its buffer.
func parseCopyData(d []byte) (any, error) {
	if len(d) == 0 {
		return nil, fmt.Errorf("receive: empty copy data: %w", ErrMalformed)
	}
	switch d[0] {
	case 'w':
		if len(d) < 25 {
			return nil, fmt.Errorf("receive: XLogData of %d bytes: %w", len(d), ErrMalformed)
		}
		return &XLogData{
			WALStart:   LSN(binary.BigEndian.Uint64(d[1:])),
			WALEnd:     LSN(binary.BigEndian.Uint64(d[9:])),
			ServerTime: pgTime(int64(binary.BigEndian.Uint64(d[17:]))),
			Data:       append([]byte(nil), d[25:]...),
		}, nil
	case 'k':
		if len(d) < 18 {
			return nil, fmt.Errorf("receive: keepalive of %d bytes: %w", len(d), ErrMalformed)
		}
		return &Keepalive{
			WALEnd:         LSN(binary.BigEndian.Uint64(d[1:])),
			ServerTime:     pgTime(int64(binary.BigEndian.Uint64(d[9:]))),
			ReplyRequested: d[17] != 0,
		}, nil
	default:
		return nil, fmt.Errorf("receive: unknown copy data type %q: %w", d[0], ErrMalformed)
	}
}

// encodeStandbyStatus builds the 'r' message.
func encodeStandbyStatus(s StandbyStatus, now time.Time) []byte {
	b := make([]byte, 34)
	b[0] = 'r'
	binary.BigEndian.PutUint64(b[1:], uint64(s.Write))
	binary.BigEndian.PutUint64(b[9:], uint64(s.Flush))
	binary.BigEndian.PutUint64(b[17:], uint64(s.Apply))
	binary.BigEndian.PutUint64(b[25:], uint64(pgMicros(now)))
	if s.ReplyRequested {
		b[33] = 1
	}
	return b
}

// SendStandbyStatus sends a standby status update.
func (c *ReplConn) SendStandbyStatus(ctx context.Context, s StandbyStatus) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if c.conn.IsClosed() {
		// After a failed read pgconn closes the connection in the
		// background, using the frontend: it must not be touched then.
		return fmt.Errorf("send standby status: %w", net.ErrClosed)
	}
	fe := c.conn.Frontend()
	fe.Send(&pgproto3.CopyData{Data: encodeStandbyStatus(s, time.Now())})
	if err := fe.Flush(); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes an SQL string literal.
func quoteLiteral(s string) string {
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}
