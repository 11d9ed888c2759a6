package routing

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// h1Transport is a lean HTTP/1.1 client for plain-http upstreams, used for
// requests without a body (the bulk of a web app's traffic: reads).
//
// http.Transport runs two goroutines per connection and hands every request
// and answer between them over channels; on a proxy that forwards small
// answers that hand-off costs about as much as the proxying. h1Transport
// writes the request and reads the answer's headers in the caller's
// goroutine, and returns the connection to its pool when the body has been
// read to the end. Requests with a body, upgrades and https go to the
// http.Transport (next), which can write a body while it reads an early answer.
type h1Transport struct {
	next    *http.Transport
	addr    string
	dialer  net.Dialer
	timeout time.Duration // for response headers, after the request is written

	mu      sync.Mutex
	idle    []*h1Conn // most recently used last
	closed  bool
	maxIdle int
	idleFor time.Duration
}

// h1Conn is one pooled connection.
type h1Conn struct {
	t        *h1Transport
	conn     net.Conn
	raw      syscall.RawConn // for the liveness peek; nil if unavailable
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
	reused   bool
	peek     func(fd uintptr) bool // alive's peek, made once per connection
	abort    func()                // unblocks the exchange, made once too
	peekOK   bool                  // peek's finding
	written  int64                 // bytes written in the current exchange
	read     int64                 // bytes read in the current exchange
}

func (c *h1Conn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	c.read += int64(n)
	return n, err
}

func (c *h1Conn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.written += int64(n)
	return n, err
}

func newH1Transport(next *http.Transport, addr string, timeout time.Duration) *h1Transport {
	return &h1Transport{
		next:    next,
		addr:    addr,
		dialer:  net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second},
		timeout: timeout,
		maxIdle: 1024,
		idleFor: 60 * time.Second,
	}
}

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Body != nil && req.Body != http.NoBody) || req.URL.Scheme != "http" || req.Header.Get("Upgrade") != "" {
		return t.next.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		pc, err := t.getConn(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		pc.conn.Close()
		// A pooled connection the upstream closed meanwhile: retry once on a
		// new one when the upstream cannot have acted on the request (nothing
		// was written), or when acting twice is harmless.
		if attempt == 0 && pc.reused && pc.read == 0 && ctx.Err() == nil && (pc.written == 0 || isReplayable(req)) {
			continue
		}
		return nil, err
	}
}

// isReplayable matches http.Transport: idempotent methods, or an
// Idempotency-Key header.
func isReplayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

// getConn returns a live pooled connection, or dials a new one.
func (t *h1Transport) getConn(ctx context.Context) (*h1Conn, error) {
	now := time.Now()
	t.mu.Lock()
	for len(t.idle) > 0 {
		pc := t.idle[len(t.idle)-1]
		t.idle[len(t.idle)-1] = nil
		t.idle = t.idle[:len(t.idle)-1]
		if now.Sub(pc.lastUsed) > t.idleFor {
			// The rest of the stack is older still.
			stale := append([]*h1Conn{pc}, t.idle...)
			t.idle = t.idle[:0]
			t.mu.Unlock()
			for _, s := range stale {
				s.conn.Close()
			}
			t.mu.Lock()
			continue
		}
		t.mu.Unlock()
		if pc.alive() {
			pc.reused, pc.written, pc.read = true, 0, 0
			return pc, nil
		}
		pc.conn.Close()
		t.mu.Lock()
	}
	t.mu.Unlock()
	conn, err := t.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &connectError{err: err}
	}
	pc := &h1Conn{t: t, conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	pc.br = bufio.NewReaderSize(pc, 4096)
	pc.bw = bufio.NewWriterSize(pc, 4096)
	return pc, nil
}

// putConn pools a connection whose exchange ended cleanly.
func (t *h1Transport) putConn(pc *h1Conn) {
	pc.lastUsed = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		pc.conn.Close()
		return
	}
	t.idle = append(t.idle, pc)
	t.mu.Unlock()
}

// close closes pooled connections now and those of requests in flight when
// they finish: the upstream is no longer in the configuration.
func (t *h1Transport) close() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.closed = true
	t.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
	t.next.CloseIdleConnections()
}

// aLongTimeAgo is a deadline that makes blocked reads and writes fail now.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes req and reads the answer's headers.
func (pc *h1Conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// A client that goes away unblocks the exchange at once.
	if pc.abort == nil {
		pc.abort = func() { pc.conn.SetDeadline(aLongTimeAgo) }
	}
	stop := context.AfterFunc(ctx, pc.abort)
	if err := req.Write(pc.bw); err != nil {
		stop()
		return nil, ctxErr(ctx, fmt.Errorf("write request: %w", err))
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, ctxErr(ctx, fmt.Errorf("write request: %w", err))
	}
	pc.conn.SetReadDeadline(time.Now().Add(pc.t.timeout))
	pc.recheck(ctx)
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				return nil, errHeaderTimeout
			}
			return nil, ctxErr(ctx, fmt.Errorf("read response: %w", err))
		}
		// 1xx answers other than 101 are interim: the final one follows.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		return nil, errors.New("read response: unexpected 101 to a request without Upgrade")
	}
	// Headers are in: the timeout does not apply to the body, which may
	// stream for as long as it likes.
	pc.conn.SetReadDeadline(time.Time{})
	pc.recheck(ctx)
	resp.Body = &h1Body{pc: pc, body: resp.Body, stop: stop, keep: !resp.Close}
	return resp, nil
}

// recheck restores the past deadline after a deadline change, in case the
// client went away just before it (the AfterFunc may have run already).
func (pc *h1Conn) recheck(ctx context.Context) {
	if ctx.Err() != nil {
		pc.conn.SetDeadline(aLongTimeAgo)
	}
}

// errHeaderTimeout is the timeout waiting for response headers; like
// http.Transport's it is a net.Error whose Timeout is true.
var errHeaderTimeout error = &timeoutError{"timeout awaiting response headers"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

var _ net.Error = (*timeoutError)(nil)

// ctxErr prefers the context's error, which says the client went away.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// h1Body returns its connection to the pool once read to the end, and
// closes it when abandoned before.
type h1Body struct {
	pc   *h1Conn
	body io.ReadCloser
	stop func() bool
	keep bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		// An answer without body (HEAD, 204, 304, length 0) is complete
		// even if nobody read it.
		b.finish(b.body == http.NoBody)
	}
	return nil
}

func (b *h1Body) finish(eof bool) {
	b.done = true
	// stop reports false when the client already went away and the
	// connection has a past deadline: it cannot be reused.
	if b.stop() && eof && b.keep {
		b.body.Close()
		b.pc.t.putConn(b.pc)
		return
	}
	// Close the connection first: closing an unfinished body drains it.
	b.pc.conn.Close()
	b.body.Close()
}
