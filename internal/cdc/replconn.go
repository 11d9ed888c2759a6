package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
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

// IdentifySystem runs IDENTIFY_SYSTEM.
func (c *ReplConn) IdentifySystem(ctx context.Context) (SystemInfo, error) {
	r, err := pglogrepl.IdentifySystem(ctx, c.conn)
	if err != nil {
		return SystemInfo{}, fmt.Errorf("identify system: %w", err)
	}
	return SystemInfo{SystemID: r.SystemID, Timeline: r.Timeline, XLogPos: LSN(r.XLogPos), DBName: r.DBName}, nil
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
	var action string
	switch {
	case c.major >= 15 && opts.ExportSnapshot:
		action = "(SNAPSHOT 'export')"
	case c.major >= 15:
		action = "(SNAPSHOT 'nothing')"
	case opts.ExportSnapshot: // the syntax before PostgreSQL 15
		action = "EXPORT_SNAPSHOT"
	default:
		action = "NOEXPORT_SNAPSHOT"
	}
	r, err := pglogrepl.CreateReplicationSlot(ctx, c.conn, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary:      opts.Temporary,
		SnapshotAction: action,
		Mode:           pglogrepl.LogicalReplication,
	})
	if err != nil {
		return Slot{}, fmt.Errorf("create slot %s: %w", name, err)
	}
	cp, err := ParseLSN(r.ConsistentPoint)
	if err != nil {
		return Slot{}, fmt.Errorf("create slot %s: %w", name, err)
	}
	return Slot{Name: r.SlotName, ConsistentPoint: cp, SnapshotName: r.SnapshotName, Plugin: r.OutputPlugin}, nil
}

// DropSlot drops a replication slot. With wait it waits for a connection
// still using the slot to let go of it instead of failing.
func (c *ReplConn) DropSlot(ctx context.Context, name string, wait bool) error {
	if !ValidSlotName(name) {
		return fmt.Errorf("drop slot %q: invalid slot name", name)
	}
	if err := pglogrepl.DropReplicationSlot(ctx, c.conn, name, pglogrepl.DropReplicationSlotOptions{Wait: wait}); err != nil {
		return fmt.Errorf("drop slot %s: %w", name, err)
	}
	return nil
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
	err := pglogrepl.StartReplication(ctx, c.conn, slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names " + quoteLiteral(strings.Join(names, ",")),
		},
	})
	if err != nil {
		return fmt.Errorf("start replication %s: %w", slot, err)
	}
	return nil
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

// ReceiveUntil is Receive with a deadline of its own, set on the connection,
// and without watching ctx for each message, which costs more than reading
// a small message: ctx is checked once, and WatchContext interrupts a read
// in progress when ctx ends. It fails with an error wrapping
// context.DeadlineExceeded when deadline passes first; the connection stays
// usable then.
func (c *ReplConn) ReceiveUntil(ctx context.Context, deadline time.Time) (any, error) {
	if err := c.conn.Conn().SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	// Checked after the deadline is set: WatchContext's interruption, had
	// it come before, was undone by it.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg, err := c.Receive(context.Background())
	if err != nil && pgconn.Timeout(err) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("receive: %w", context.DeadlineExceeded)
	}
	return msg, err
}

// WatchContext makes a ReceiveUntil in progress, or the next one, return
// when ctx ends, until stop is called.
func (c *ReplConn) WatchContext(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = c.conn.Conn().SetReadDeadline(time.Unix(1, 0)) })
}

// parseCopyData decodes a message of the copy-both stream with pglogrepl's
// parsers. The data is copied, since the connection reuses its buffer.
func parseCopyData(d []byte) (any, error) {
	if len(d) == 0 {
		return nil, fmt.Errorf("receive: empty copy data: %w", ErrMalformed)
	}
	switch d[0] {
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(d[1:])
		if err != nil {
			return nil, fmt.Errorf("receive: XLogData: %w: %w", err, ErrMalformed)
		}
		return &XLogData{
			WALStart:   LSN(x.WALStart),
			WALEnd:     LSN(x.ServerWALEnd),
			ServerTime: x.ServerTime.UTC(),
			Data:       bytes.Clone(x.WALData),
		}, nil
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(d[1:])
		if err != nil {
			return nil, fmt.Errorf("receive: keepalive: %w: %w", err, ErrMalformed)
		}
		return &Keepalive{WALEnd: LSN(k.ServerWALEnd), ServerTime: k.ServerTime.UTC(), ReplyRequested: k.ReplyRequested}, nil
	default:
		return nil, fmt.Errorf("receive: unknown copy data type %q: %w", d[0], ErrMalformed)
	}
}

// statusWriteTimeout bounds the write of one standby status update.
const statusWriteTimeout = 10 * time.Second

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
	// pglogrepl writes without a deadline: on a connection that stopped
	// moving (a frozen network path) a full socket buffer would block the
	// write, and the stream with it, for good.
	deadline := time.Now().Add(statusWriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.conn.Conn().SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	defer c.conn.Conn().SetWriteDeadline(time.Time{})
	err := pglogrepl.SendStandbyStatusUpdate(ctx, c.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(s.Write),
		WALFlushPosition: pglogrepl.LSN(s.Flush),
		WALApplyPosition: pglogrepl.LSN(s.Apply),
		ClientTime:       time.Now(),
		ReplyRequested:   s.ReplyRequested,
	})
	if err != nil {
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
