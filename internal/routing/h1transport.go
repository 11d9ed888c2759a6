package routing

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
	urlHost string // the URL host of the requests it carries
	host    string // their Host header; "" to leave it to Request.Write
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

	// The current exchange's cancellation and header timeout; see wake.
	ctx      context.Context
	due      time.Time   // when the answer's headers are late; zero outside that wait
	deadline time.Time   // the connection's deadline as last set here
	stop     func() bool // stops the watch on ctx; nil while unwatched
}

// watchGrace is how long an exchange may block on its upstream before it
// watches its client's context. Most exchanges end well within it and never
// pay for the watch (a context.AfterFunc) or for moving the connection's
// deadline (a timer update): the deadline is moved only when it falls due
// within half of watchGrace, and every exchange that blocks past it wakes up
// there and starts watching. So a client that goes away is noticed after at
// most watchGrace, and the header timeout fires on time.
const watchGrace = 100 * time.Millisecond

func (c *h1Conn) Read(p []byte) (int, error) {
	for {
		n, err := c.conn.Read(p)
		c.read += int64(n)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !c.wake() {
			return n, err
		}
	}
}

func (c *h1Conn) Write(p []byte) (int, error) {
	n := 0
	for {
		m, err := c.conn.Write(p[n:])
		n += m
		c.written += int64(m)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !c.wake() {
			return n, err
		}
	}
}

// begin starts an exchange for ctx on the connection.
func (c *h1Conn) begin(ctx context.Context, now time.Time) {
	c.ctx, c.due, c.stop = ctx, time.Time{}, nil
	c.written, c.read = 0, 0
	c.keepDeadline(now)
}

// keepDeadline keeps the deadline of an unwatched exchange between half of
// watchGrace and watchGrace ahead, and no later than due, moving it only
// when it has to.
func (c *h1Conn) keepDeadline(now time.Time) {
	limit := now.Add(watchGrace)
	if !c.due.IsZero() && c.due.Before(limit) {
		limit = c.due
	}
	if d := c.deadline; d.IsZero() || d.After(limit) || d.Sub(now) < watchGrace/2 && !d.Equal(limit) {
		c.setDeadline(limit)
	}
}

func (c *h1Conn) setDeadline(t time.Time) {
	c.deadline = t
	c.conn.SetDeadline(t)
}

// wake runs when a read or write hit the connection's deadline, and reports
// whether to try again: not when the client went away (the watch set a past
// deadline, or the grace ran out after it left) nor when the headers are
// late. Otherwise the exchange is slow, not failed: it starts watching its
// client's context, and the deadline becomes the exact header timeout (none
// outside the wait for headers).
func (c *h1Conn) wake() bool {
	if c.ctx.Err() != nil {
		return false
	}
	if !c.due.IsZero() && !time.Now().Before(c.due) {
		return false
	}
	if c.stop == nil {
		if c.abort == nil {
			c.abort = func() { c.conn.SetDeadline(aLongTimeAgo) }
		}
		c.stop = context.AfterFunc(c.ctx, c.abort)
	}
	c.setDeadline(c.due)
	// A client that left before the line above had its past deadline
	// overwritten.
	return c.ctx.Err() == nil
}

// awaitHeaders sets the header timeout, once the request is written.
func (c *h1Conn) awaitHeaders(now time.Time) {
	c.due = now.Add(c.t.timeout)
	if c.stop != nil {
		c.setDeadline(c.due)
		return
	}
	c.keepDeadline(now)
}

// awaitBody lifts the header timeout: the body may stream for as long as it
// likes.
func (c *h1Conn) awaitBody() {
	c.due = time.Time{}
	if c.stop != nil {
		c.setDeadline(time.Time{})
	}
}

// end ends the exchange and reports whether the connection may carry
// another: false when the watch fired, which leaves a past deadline.
func (c *h1Conn) end() bool {
	ok := c.stop == nil || c.stop()
	c.ctx, c.stop = nil, nil
	return ok
}

func newH1Transport(next *http.Transport, urlHost, addr string, timeout time.Duration) *h1Transport {
	t := &h1Transport{
		next:    next,
		addr:    addr,
		urlHost: urlHost,
		dialer:  net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second},
		timeout: timeout,
		maxIdle: 1024,
		idleFor: 60 * time.Second,
	}
	// Request.Write cleans and checks the Host it sends (IDNA, IPv6 zones);
	// a plain name or address and port needs none of it, anything else is
	// left to it.
	if plainHost(urlHost) {
		t.host = urlHost
	}
	return t
}

func plainHost(h string) bool {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']':
		default:
			return false
		}
	}
	return h != ""
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
		pc.end()
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
//
// Every pooled connection is peeked at before it is reused, however recently
// it came back (issue 16, finding 1): an upstream that wrote anything after
// its answer (a body on a HEAD answer, more than its Content-Length, a
// second answer) would otherwise have those bytes read as the answer to the
// next client's request. One non-blocking recv per reuse is the price.
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
		// The deadline first: the peek fails on a past one.
		pc.begin(ctx, now)
		if pc.alive() {
			pc.reused = true
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
	pc.begin(ctx, time.Now())
	return pc, nil
}

// putConn pools a connection whose exchange ended cleanly.
func (t *h1Transport) putConn(pc *h1Conn) {
	pc.lastUsed = time.Now()
	t.mu.Lock()
	// Bytes after the answer's end are nothing a request asked for: the
	// upstream's framing and ours disagree, and the connection cannot be
	// trusted with another request.
	if t.closed || len(t.idle) >= t.maxIdle || pc.br.Buffered() > 0 {
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
	if pc.t.host == "" || req.URL.Host != pc.t.urlHost || !writeRequest(pc.bw, req, pc.t.host) {
		if err := req.Write(pc.bw); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("write request: %w", err))
		}
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("write request: %w", err))
	}
	pc.awaitHeaders(time.Now())
	resp, n, err := pc.readResponse(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return nil, errHeaderTimeout
		}
		return nil, ctxErr(ctx, fmt.Errorf("read response: %w", err))
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil, errors.New("read response: unexpected 101 to a request without Upgrade")
	}
	pc.awaitBody()
	b := &h1Body{pc: pc, body: resp.Body, n: n, keep: !resp.Close}
	if resp.Body == nil && n == 0 {
		b.body = http.NoBody
	}
	resp.Body = b
	return resp, nil
}

// readResponse reads the answer's headers: those parseResponse handles
// without net/http, the rest with http.ReadResponse. n is the length of a
// body parseResponse left in pc.br (resp.Body is then nil).
func (pc *h1Conn) readResponse(req *http.Request) (resp *http.Response, n int64, err error) {
	if _, err := pc.br.Peek(1); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, err
	}
	if resp, n, ok := parseResponse(pc.br, req); ok {
		return resp, n, nil
	}
	for {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, 0, err
		}
		// 1xx answers other than 101 are interim: the final one follows.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, 0, nil
		}
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
	body io.ReadCloser // net/http's reader; nil when the body is the next n bytes of pc.br
	n    int64
	keep bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.body != nil {
		n, err := b.body.Read(p)
		if err == io.EOF {
			b.finish(true)
		}
		return n, err
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.pc.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		b.finish(true)
		return n, io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
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
	if b.pc.end() && eof && b.keep {
		if b.body != nil {
			b.body.Close()
		}
		b.pc.t.putConn(b.pc)
		return
	}
	// Close the connection first: closing an unfinished body drains it.
	b.pc.conn.Close()
	if b.body != nil {
		b.body.Close()
	}
}
