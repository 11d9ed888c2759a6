package cdc

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

// relay forwards TCP connections to a server. freeze makes the
// connections open at that moment stop forwarding in both directions
// while staying open, as a stuck network path or a hung walsender looks
// to the client: nothing arrives, nothing fails. Later connections are
// forwarded as usual.
type relay struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*relayConn
}

type relayConn struct {
	client, server net.Conn
	frozen         atomic.Bool
}

func newRelay(tb testing.TB, target string) *relay {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	go r.accept()
	tb.Cleanup(r.close)
	return r
}

func (r *relay) accept() {
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", r.target)
		if err != nil {
			client.Close()
			continue
		}
		c := &relayConn{client: client, server: server}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		go c.pipe(server, client)
		go c.pipe(client, server)
	}
}

// pipe copies from src to dst until either closes, and then closes both.
// While frozen it reads and drops, so neither end sees a full buffer, and
// a close is not passed on either: as over a broken network path, the other
// end never learns of it.
func (c *relayConn) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !c.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !c.frozen.Load() {
				dst.Close()
				src.Close()
			}
			return
		}
	}
}

// freeze stops the connections open now from forwarding anything.
func (r *relay) freeze() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.conns {
		if !c.frozen.Swap(true) {
			n++
		}
	}
	return n
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.client.Close()
		c.server.Close()
	}
}

// url returns dbURL pointed at the relay, with rawQuery added.
func (r *relay) url(tb testing.TB, dbURL, rawQuery string) string {
	tb.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	u.Host = r.ln.Addr().String()
	u.RawQuery += "&" + rawQuery
	return u.String()
}

// TestStreamFrozenWalsenderReconnects pins issue 15, item 13: a connection
// on which nothing arrives any more, not even keepalives, while it stays
// open. The stream must give up on it after ReceiveTimeout, reconnect, and
// deliver the changes committed after the freeze.
func TestStreamFrozenWalsenderReconnects(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "frozen", `CREATE TABLE a (id int PRIMARY KEY);
		CREATE PUBLICATION pub FOR TABLE a`)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, u.Host)
	// The server keeps the frozen walsender, and the slot with it, until it
	// has heard nothing for wal_sender_timeout: short here, so the new
	// connection gets the slot soon.
	connString := r.url(t, db.URL, "options=-c%20wal_sender_timeout%3D2s")
	s := openStream(t, StreamConfig{ConnString: connString, Slot: "frozen", Publications: []string{"pub"},
		StartLSN: start, StatusInterval: 100 * time.Millisecond, ReceiveTimeout: time.Second})

	execAll(t, db.Pool, `INSERT INTO a VALUES (1)`)
	tx := next(t, s)
	if got := summary(tx); len(got) != 1 || got[0] != "insert:a:1" {
		t.Fatalf("before the freeze: got %v, want [insert:a:1]", got)
	}
	s.Ack(tx.EndLSN)
	if n := r.freeze(); n != 1 {
		t.Fatalf("frozen connections: got %d, want 1", n)
	}
	execAll(t, db.Pool, `INSERT INTO a VALUES (2)`)
	tx = next(t, s)
	if got := summary(tx); len(got) != 1 || got[0] != "insert:a:2" {
		t.Errorf("after the freeze: got %v, want [insert:a:2]", got)
	}
	if got := s.Connections(); got < 2 {
		t.Errorf("connections: got %d, want at least 2 (a reconnect)", got)
	}
	if err := s.Err(); err != nil {
		t.Errorf("stream error: got %v, want nil while it runs", err)
	}
}

// TestRetryableReceiveTimeout checks that a frozen connection is retried,
// not taken for a failure that stops the stream.
func TestRetryableReceiveTimeout(t *testing.T) {
	err := errors.Join(io.EOF, ErrReceiveTimeout)
	if !Retryable(err) {
		t.Errorf("Retryable(%v): got false, want true", err)
	}
}
