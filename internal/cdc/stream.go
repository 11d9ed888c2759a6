package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/semaphore"
)

// Op is the kind of a Change.
type Op uint8

// Change kinds.
const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
	OpTruncate
)

// String returns the operation's lower-case name, as used in metric labels.
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Change is one row change, or one truncation, of a Transaction.
type Change struct {
	// Op is the kind of change.
	Op Op
	// Relation is the table as described by the server when the change
	// was made. Nil for OpTruncate.
	Relation *Relation
	// OldKind is TupleKey or TupleOld when Old is set, else 0.
	OldKind byte
	// Old is the old key or row of an update that changed the key (or of
	// any update under REPLICA IDENTITY FULL) and of a delete.
	Old Tuple
	// New is the row of an insert or update.
	New Tuple
	// Truncated lists the tables of an OpTruncate.
	Truncated []*Relation
	// TruncateOptions is a bit set of TruncateCascade and
	// TruncateRestartIdentity.
	TruncateOptions uint8
}

// Transaction is one source transaction, or one part of one.
//
// A source transaction with more than StreamConfig.MaxTxChanges changes is
// delivered in parts, so that no more than that many of its changes need be
// held in memory at once: parts number 0, 1, 2, … in order, every part but
// the last has More set, and only the last one carries EndLSN. A transaction
// that fits is delivered whole, as one part: Part 0, More false.
//
// The first part of a transaction always has Part 0. When the connection
// drops in the middle of a transaction, the server sends it again from its
// beginning after the reconnect, so the stream delivers it again from Part 0:
// a consumer that holds parts of a transaction (in an open target
// transaction, say) and receives any Part 0 must discard what it holds and
// start over with that part.
type Transaction struct {
	// Xid is the source transaction id.
	Xid uint32
	// CommitLSN is the LSN of the commit record, known from the start: it
	// is set on every part.
	CommitLSN LSN
	// EndLSN is the LSN just past the commit record: once the transaction
	// is applied, acknowledge it with Stream.Ack(EndLSN). It is set on the
	// last part only (zero while More is set).
	EndLSN LSN
	// CommitTime is when the transaction committed on the source, set on
	// every part.
	CommitTime time.Time
	// Origin names the replication origin, "" when none.
	Origin string
	// Relations are the Relation messages received with this part, in
	// order: the tables whose description the changes use for the first
	// time in this session, or that changed. A change's Relation is always
	// set, whichever part brought the Relation message.
	Relations []*Relation
	// Changes are the part's changes in source order.
	Changes []Change
	// Part numbers the parts of one transaction from 0.
	Part int
	// More is set when more parts of the same transaction follow.
	More bool
}

// StreamConfig configures a Stream.
type StreamConfig struct {
	// ConnString connects to the source database (an ordinary URL;
	// replication=database is added).
	ConnString string
	// Slot is the logical replication slot, which must exist.
	Slot string
	// Publications name the publications to stream.
	Publications []string
	// StartLSN is the position applied so far: transactions ending at or
	// before it (whose commit record lies before it) are not delivered.
	StartLSN LSN
	// StatusInterval is how often a standby status update is sent; 10s when
	// zero.
	StatusInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting after a
	// failure; 100ms and 10s when zero. The wait doubles on each failure in
	// a row.
	MinBackoff, MaxBackoff time.Duration
	// MaxTxChanges is the most changes one Transaction value holds: a
	// source transaction with more is delivered in parts of at most this
	// many changes; 10,000 when zero.
	MaxTxChanges int
	// Buffer is how many transactions (or parts) may wait for Next; 64 when
	// zero.
	Buffer int
	// BufferChanges bounds the changes of the transactions waiting for Next
	// together; twice MaxTxChanges when zero, never less than MaxTxChanges.
	BufferChanges int
	// ReceiveTimeout is how long the connection may stay silent, not even
	// a keepalive arriving, before it is taken for frozen: the stream then
	// logs a warning, drops the connection and reconnects.
	// DefaultReceiveTimeout when zero.
	//
	// Each periodic status update asks the server for a keepalive, so a
	// live server is heard at least once per StatusInterval; the default is
	// PostgreSQL's default wal_sender_timeout (60s), the silence after which
	// the server gives up on a client, plus a margin (issue 15, item 13: an
	// open connection on which nothing arrived for 75s went unnoticed).
	ReceiveTimeout time.Duration
	// Logger receives reconnect warnings; slog.Default() when nil.
	Logger *slog.Logger
	// SkipOrigins names replication origins whose transactions are not
	// delivered: those that the source's pgoutput marks with an Origin
	// message naming one of them. Two-way sync uses it so that a change it
	// applied is not sent back (PostgreSQL 15's pgoutput has no origin
	// option). Skipped transactions are acknowledged like the others, so
	// the slot does not hold their WAL.
	SkipOrigins []string
}

// DefaultReceiveTimeout is StreamConfig.ReceiveTimeout's default.
const DefaultReceiveTimeout = 70 * time.Second

// ErrReceiveTimeout is the reason a connection is dropped when nothing
// arrived on it for StreamConfig.ReceiveTimeout. The stream reconnects.
var ErrReceiveTimeout = errors.New("nothing received from the server, not even a keepalive: the connection looks frozen")

// Stream reads a slot's changes and yields transactions in commit order,
// large ones in parts (see Transaction). It answers keepalives, reports the
// position the caller acknowledges as flushed, and reconnects with backoff
// when the connection drops or the server restarts, resuming after the last
// acknowledged transaction without delivering a finished transaction twice;
// a transaction cut short by the reconnect comes again from its Part 0.
//
// The flushed position reported to the server never passes what the caller
// acknowledged with Ack, with one exception that loses nothing: when every
// delivered transaction is acknowledged and none is half received, it
// advances to the end of WAL announced by the server's keepalives, so that an
// idle slot does not hold WAL for transactions that touch none of its tables.
//
// Memory is bounded whatever the size of a source transaction: the stream
// holds the part it is receiving (at most MaxTxChanges changes) and the
// transactions and parts waiting for Next (at most Buffer of them with at
// most BufferChanges changes together).
type Stream struct {
	cfg    StreamConfig
	log    *slog.Logger
	out    chan *Transaction
	room   *semaphore.Weighted // changes that may still be queued for Next
	cancel context.CancelFunc
	done   chan struct{}

	acked   atomic.Uint64 // LSN the caller has committed in the target
	flushed atomic.Uint64 // LSN last reported as flushed
	walEnd  atomic.Uint64 // latest end of WAL from a keepalive
	conns   atomic.Int64  // connections made
	updates atomic.Int64  // standby status updates sent
	skipped atomic.Int64  // transactions skipped for their origin

	errMu sync.Mutex
	err   error

	// Owned by the reading goroutine.
	relations map[uint32]*Relation
	cur       *Transaction // the part being received, nil outside a transaction
	skipping  bool         // inside a transaction delivered before
	lastEnd   LSN          // end LSN of the last transaction queued for Next
	// passed is the end LSN of the last transaction skipped for its origin:
	// once everything delivered before it is acknowledged, the server may
	// forget it.
	passed atomic.Uint64
}

// OpenStream connects and starts streaming in the background. The first
// connection is made before OpenStream returns, so that a wrong address,
// slot or publication fails here (a slot still held by a connection that is
// going away is waited for briefly); later failures are retried.
func OpenStream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.MaxTxChanges <= 0 {
		cfg.MaxTxChanges = 10000
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	if cfg.BufferChanges <= 0 {
		cfg.BufferChanges = 2 * cfg.MaxTxChanges
	}
	cfg.BufferChanges = max(cfg.BufferChanges, cfg.MaxTxChanges)
	if cfg.ReceiveTimeout <= 0 {
		cfg.ReceiveTimeout = DefaultReceiveTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Stream{
		cfg:       cfg,
		log:       cfg.Logger.With("slot", cfg.Slot),
		out:       make(chan *Transaction, cfg.Buffer),
		room:      semaphore.NewWeighted(int64(cfg.BufferChanges)),
		done:      make(chan struct{}),
		relations: make(map[uint32]*Relation),
		lastEnd:   cfg.StartLSN,
	}
	s.acked.Store(uint64(cfg.StartLSN))
	s.flushed.Store(uint64(cfg.StartLSN))
	conn, err := s.connect(ctx)
	// A connection that used the slot a moment ago (the one that created
	// it, or a previous run) may not have let go of it yet: retry a few
	// times, but fail fast on what retrying cannot fix.
	for attempt, wait := 1, cfg.MinBackoff; err != nil && Retryable(err) && attempt < 5; attempt, wait = attempt+1, min(2*wait, cfg.MaxBackoff) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		conn, err = s.connect(ctx)
	}
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.run(runCtx, conn)
	return s, nil
}

// Next returns the next transaction or part. It returns the stream's error once the
// stream has stopped for good (after Close, a non-retryable failure, or a
// malformed message), and ctx's error when ctx ends first.
func (s *Stream) Next(ctx context.Context) (*Transaction, error) {
	select {
	case tx := <-s.out:
		return s.taken(tx), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		select {
		case tx := <-s.out:
			return s.taken(tx), nil
		default:
		}
		return nil, s.Err()
	}
}

// TryNext returns the next transaction or part if one is waiting, without
// blocking.
func (s *Stream) TryNext() (*Transaction, bool) {
	select {
	case tx := <-s.out:
		return s.taken(tx), true
	default:
		return nil, false
	}
}

// taken frees the room tx held in the queue.
func (s *Stream) taken(tx *Transaction) *Transaction {
	s.room.Release(int64(len(tx.Changes)))
	return tx
}

// Ack tells the stream that every transaction ending at or before lsn is
// durably applied, so the server may forget it. It never lowers the
// acknowledged position.
func (s *Stream) Ack(lsn LSN) {
	for {
		cur := s.acked.Load()
		if uint64(lsn) <= cur || s.acked.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Acked returns the position acknowledged with Ack.
func (s *Stream) Acked() LSN { return LSN(s.acked.Load()) }

// Flushed returns the position last reported to the server as flushed.
func (s *Stream) Flushed() LSN { return LSN(s.flushed.Load()) }

// ServerWALEnd returns the latest end of WAL the server announced.
func (s *Stream) ServerWALEnd() LSN { return LSN(s.walEnd.Load()) }

// Skipped returns how many transactions were skipped for their origin
// (StreamConfig.SkipOrigins) so far.
func (s *Stream) Skipped() int64 { return s.skipped.Load() }

// Connections returns how many connections the stream has made so far.
func (s *Stream) Connections() int64 { return s.conns.Load() }

// Err returns the error that stopped the stream, nil while it runs.
func (s *Stream) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Close stops the stream after reporting the acknowledged position to the
// server, and waits for it to end.
func (s *Stream) Close() error {
	s.cancel()
	<-s.done
	if err := s.Err(); err != nil && !errors.Is(err, ErrStreamClosed) {
		return err
	}
	return nil
}

// ErrStreamClosed is the stream's error after Close.
var ErrStreamClosed = errors.New("stream closed")

func (s *Stream) connect(ctx context.Context) (*ReplConn, error) {
	conn, err := Connect(ctx, s.cfg.ConnString)
	if err != nil {
		return nil, err
	}
	s.conns.Add(1)
	start := s.Acked()
	if err := conn.StartReplication(ctx, s.cfg.Slot, start, s.cfg.Publications); err != nil {
		closeQuietly(conn)
		return nil, err
	}
	return conn, nil
}

func closeQuietly(conn *ReplConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// run owns the connection: it reads, reconnects and delivers until ctx ends
// or a failure cannot be retried.
func (s *Stream) run(ctx context.Context, conn *ReplConn) {
	defer close(s.done)
	backoff := s.cfg.MinBackoff
	for {
		streamed, err := s.session(ctx, conn)
		closeQuietly(conn)
		if s.stopOn(ctx, err) {
			return
		}
		if streamed {
			backoff = s.cfg.MinBackoff
		}
		for {
			s.log.Warn("replication connection lost; reconnecting", "error", err, "in", backoff)
			select {
			case <-ctx.Done():
				s.setErr(ErrStreamClosed)
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
			if conn, err = s.connect(ctx); err == nil {
				break
			}
			if s.stopOn(ctx, err) {
				return
			}
		}
	}
}

// stopOn reports whether the stream must stop after err, recording why.
func (s *Stream) stopOn(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil:
		s.setErr(ErrStreamClosed)
	case !Retryable(err):
		s.setErr(err)
	default:
		return false
	}
	return true
}

func (s *Stream) setErr(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Retryable reports whether a failure of OpenStream or of a stream may go
// away by reconnecting: network failures and server shutdowns may, a
// malformed message or a missing slot or publication will not.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrMalformed) || errors.Is(err, errProtocol) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "42"), // undefined slot or publication, syntax
			strings.HasPrefix(pgErr.Code, "28"), // authentication
			pgErr.Code == "3D000":               // database does not exist
			return false
		}
	}
	return true
}

var errProtocol = errors.New("replication protocol violation")

// session reads from conn until it fails. streamed reports whether anything
// was received, which resets the backoff.
func (s *Stream) session(ctx context.Context, conn *ReplConn) (streamed bool, err error) {
	// A transaction half received on the previous connection is sent again
	// from its beginning, and delivered again from its Part 0.
	s.cur, s.skipping = nil, false
	nextStatus := time.Now().Add(s.cfg.StatusInterval)
	// heard is when the server was last heard from, or when the stream
	// last went back to listening after waiting for its caller.
	heard := time.Now()
	defer conn.WatchContext(ctx)()
	defer func() {
		// Report the acknowledged position on the way out (Close, SIGTERM),
		// so the server need not resend what is applied.
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.sendStatus(sctx, conn, false)
	}()
	for {
		if silent := time.Since(heard); silent >= s.cfg.ReceiveTimeout {
			return streamed, fmt.Errorf("receive: %s: %w", silent.Round(time.Second), ErrReceiveTimeout)
		}
		if !time.Now().Before(nextStatus) {
			// Ask for a keepalive: a live server answers it at once, so
			// silence means a frozen connection; and when idle, its end of
			// WAL lets the flushed position advance past transactions of
			// other tables.
			if err := s.sendStatus(ctx, conn, true); err != nil {
				return streamed, err
			}
			nextStatus = time.Now().Add(s.cfg.StatusInterval)
		}
		wait := nextStatus
		if giveUp := heard.Add(s.cfg.ReceiveTimeout); giveUp.Before(wait) {
			wait = giveUp
		}
		msg, err := conn.ReceiveUntil(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return streamed, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return streamed, err
		}
		streamed = true
		heard = time.Now()
		switch m := msg.(type) {
		case *Keepalive:
			if LSN(s.walEnd.Load()) < m.WALEnd {
				s.walEnd.Store(uint64(m.WALEnd))
			}
			if m.ReplyRequested {
				if err := s.sendStatus(ctx, conn, false); err != nil {
					return streamed, err
				}
				nextStatus = time.Now().Add(s.cfg.StatusInterval)
			}
		case *XLogData:
			tx, err := s.handle(m.Data)
			if err != nil {
				return streamed, err
			}
			if tx != nil {
				if err := s.deliver(ctx, conn, tx); err != nil {
					return streamed, err
				}
				// The caller may have kept the stream waiting: the
				// silence counts from now.
				heard = time.Now()
			}
		}
	}
}

// deliver queues tx for Next, still sending status updates while the queue
// is full so the server does not time the connection out.
func (s *Stream) deliver(ctx context.Context, conn *ReplConn, tx *Transaction) error {
	n := int64(len(tx.Changes))
	for {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.StatusInterval)
		err := s.room.Acquire(wctx, n)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.sendStatus(ctx, conn, false); err != nil {
			return err
		}
	}
	t := time.NewTicker(s.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case s.out <- tx:
			return nil
		case <-ctx.Done():
			s.room.Release(n)
			return ctx.Err()
		case <-t.C:
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return err
			}
		}
	}
}

// idle reports whether nothing is half received and every delivered
// transaction is acknowledged.
func (s *Stream) idle() bool {
	return s.cur == nil && !s.skipping && s.Acked() >= s.lastEnd
}

// flushPosition is the position that may be reported as flushed.
func (s *Stream) flushPosition() LSN {
	acked := s.Acked()
	// When idle the server has sent everything before its announced end of
	// WAL, so the commits before it are all applied or touch no published
	// table.
	if s.idle() {
		if end := max(s.ServerWALEnd(), LSN(s.passed.Load())); end > acked {
			return end
		}
	}
	return acked
}

func (s *Stream) sendStatus(ctx context.Context, conn *ReplConn, reply bool) error {
	flush := s.flushPosition()
	if flush < s.Flushed() {
		flush = s.Flushed()
	}
	write := max(flush, s.lastEnd)
	if err := conn.SendStandbyStatus(ctx, StandbyStatus{Write: write, Flush: flush, Apply: flush, ReplyRequested: reply}); err != nil {
		return err
	}
	s.flushed.Store(uint64(flush))
	s.updates.Add(1)
	return nil
}

// handle decodes one pgoutput message and returns a transaction, or a part
// of one, once it is ready for delivery.
func (s *Stream) handle(data []byte) (*Transaction, error) {
	if s.skipping && len(data) > 0 && bytes.IndexByte(droppedWhenSkipping, data[0]) >= 0 {
		// A row change or truncate of a transaction that is skipped is
		// dropped undecoded: in two-way sync every transaction the other
		// direction applied comes back this way, as many changes as the
		// side's own.
		return nil, nil
	}
	msg, err := Decode(data)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *Begin:
		if s.cur != nil || s.skipping {
			return nil, fmt.Errorf("begin of xid %d inside a transaction: %w", m.Xid, errProtocol)
		}
		// Decided here rather than at the commit, so that no part of a
		// transaction delivered before a reconnect, or applied before this
		// run, is delivered again: its commit record lies before the end of
		// the last transaction delivered (or StartLSN).
		if m.FinalLSN < s.lastEnd {
			s.skipping = true
			return nil, nil
		}
		s.cur = &Transaction{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
	case *Commit:
		if s.skipping {
			s.skipping = false
			if s.cur != nil {
				// Skipped for its origin: nothing of it was delivered.
				s.cur = nil
				s.skipped.Add(1)
				if m.EndLSN > LSN(s.passed.Load()) {
					s.passed.Store(uint64(m.EndLSN))
				}
			}
			return nil, nil
		}
		tx := s.cur
		if tx == nil {
			return nil, fmt.Errorf("commit at %s outside a transaction: %w", m.CommitLSN, errProtocol)
		}
		s.cur = nil
		tx.CommitLSN, tx.EndLSN, tx.CommitTime = m.CommitLSN, m.EndLSN, m.CommitTime
		s.lastEnd = tx.EndLSN
		return tx, nil
	case *Origin:
		if s.cur != nil {
			s.cur.Origin = m.Name
			if slices.Contains(s.cfg.SkipOrigins, m.Name) {
				if s.cur.Part > 0 {
					return nil, fmt.Errorf("origin %q after part %d of xid %d: %w", m.Name, s.cur.Part, s.cur.Xid, errProtocol)
				}
				// s.cur stays set (with its changes dropped) until the
				// commit, which tells skipping for the origin from
				// skipping a transaction delivered before.
				s.cur.Changes, s.cur.Relations = nil, nil
				s.skipping = true
			}
		}
	case *Relation:
		s.relations[m.ID] = m
		if s.cur != nil {
			part := s.cut()
			s.cur.Relations = append(s.cur.Relations, m)
			return part, nil
		}
	case *Type, *LogicalMessage:
	case *Insert:
		return s.add(Change{Op: OpInsert, New: m.New}, m.RelationID)
	case *Update:
		return s.add(Change{Op: OpUpdate, OldKind: m.OldKind, Old: m.Old, New: m.New}, m.RelationID)
	case *Delete:
		return s.add(Change{Op: OpDelete, OldKind: m.OldKind, Old: m.Old}, m.RelationID)
	case *Truncate:
		if s.cur == nil && !s.skipping {
			return nil, fmt.Errorf("truncate outside a transaction: %w", errProtocol)
		}
		c := Change{Op: OpTruncate, TruncateOptions: m.Options}
		for _, id := range m.RelationIDs {
			rel, ok := s.relations[id]
			if !ok {
				return nil, fmt.Errorf("truncate of unknown relation %d: %w", id, errProtocol)
			}
			c.Truncated = append(c.Truncated, rel)
		}
		return s.append(c), nil
	}
	return nil, nil
}

// add appends a row change to the current transaction after checking it
// against its relation. It returns the part to deliver first, if any.
func (s *Stream) add(c Change, relID uint32) (*Transaction, error) {
	if s.cur == nil && !s.skipping {
		return nil, fmt.Errorf("%s outside a transaction: %w", c.Op, errProtocol)
	}
	rel, ok := s.relations[relID]
	if !ok {
		return nil, fmt.Errorf("%s of unknown relation %d: %w", c.Op, relID, errProtocol)
	}
	n := len(rel.Columns)
	if (c.New != nil && len(c.New) != n) || (c.Old != nil && len(c.Old) != n) {
		return nil, fmt.Errorf("%s on %s.%s: tuple does not match the relation's %d columns: %w",
			c.Op, rel.Namespace, rel.Name, n, errProtocol)
	}
	c.Relation = rel
	return s.append(c), nil
}

// droppedWhenSkipping are the pgoutput message types (insert, update,
// delete, truncate) that append drops in a skipped transaction.
var droppedWhenSkipping = []byte("IUDT")

// append adds a change to the part being received, unless the transaction
// is skipped. It returns the part to deliver first, if any.
func (s *Stream) append(c Change) *Transaction {
	if s.skipping {
		return nil
	}
	part := s.cut()
	s.cur.Changes = append(s.cur.Changes, c)
	return part
}

// cut returns the part being received if it is full, and starts the next
// one. A part is cut only when something more comes for the transaction, so
// a transaction of exactly MaxTxChanges changes is still one part and a
// last part is never empty.
func (s *Stream) cut() *Transaction {
	if len(s.cur.Changes) < s.cfg.MaxTxChanges {
		return nil
	}
	part := s.cur
	part.More = true
	s.cur = &Transaction{Xid: part.Xid, CommitLSN: part.CommitLSN, CommitTime: part.CommitTime, Origin: part.Origin, Part: part.Part + 1}
	return part
}
