package h1serve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A connection's states, for Shutdown.
const (
	stateNew    int32 = iota // accepted, no request yet
	stateIdle                // waiting for its next request
	stateActive              // serving a request
	stateClosed              // closed by Shutdown or Close
)

// watchGrace is how long a request runs before its connection is watched
// for a client that went away. Most requests end well before and never pay
// for the watch.
const watchGrace = 100 * time.Millisecond

// aLongTimeAgo is a read deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

type conn struct {
	s        *Server
	c        net.Conn
	raw      syscall.RawConn
	br       *bufio.Reader
	bw       *bufio.Writer
	ctx      context.Context // the server and local address values
	remote   string
	accepted time.Time
	state    atomic.Int32
	deadline time.Time // the read deadline last set
	head     []byte    // a copy of the request head being served (see parsePlain and readRequest)
	lastPOST bool      // the last request served was a POST
	w        response

	// The watch for a client that goes away, started by timer.
	wmu       sync.Mutex
	timer     *time.Timer
	inRequest bool
	cancel    context.CancelFunc
	body      *requestBody
	watching  bool
	watchDone chan struct{}
}

func (s *Server) newConn(c net.Conn) *conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.std)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	cn := &conn{s: s, c: c, raw: raw, ctx: ctx, remote: c.RemoteAddr().String(), accepted: time.Now()}
	cn.w.c = cn
	cn.w.header = make(http.Header)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil
	}
	s.conns[cn] = struct{}{}
	return cn
}

// serve reads and answers requests until the connection closes, the client
// asks to close it, or a request is handed to net/http with the connection.
func (c *conn) serve() {
	handed := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.s.logf("http: panic serving %v: %v\n%s", c.remote, v, stackTrace())
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		if c.timer != nil {
			c.timer.Stop()
		}
		if !handed {
			c.c.Close()
		}
		if c.br != nil {
			c.br.Reset(nil)
			readerPool.Put(c.br)
		}
		if c.bw != nil {
			c.bw.Reset(nil)
			writerPool.Put(c.bw)
		}
	}()
	c.br = newReader(c.c)
	c.bw = newWriter(c.c)
	if d := c.s.ReadHeaderTimeout; d > 0 {
		c.setDeadline(c.accepted.Add(d))
	}
	for first := true; ; first = false {
		// As net/http, wait for the first byte of a connection's first
		// request, but for four of any next one: a connection that ends
		// with fewer is closed without an answer.
		wait := 1
		if !first {
			c.idleDeadline()
			wait = 4
		}
		if _, err := c.br.Peek(wait); err != nil {
			return
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) && !c.state.CompareAndSwap(stateNew, stateActive) {
			return // closed by Shutdown
		}
		if c.lastPOST {
			// As net/http, for old clients that end a POST body with
			// an extra CRLF.
			peek, _ := c.br.Peek(4)
			c.br.Discard(numLeadingCRorLF(peek))
		}
		head, ok := c.readHead(first)
		if !ok {
			return
		}
		if head == nil {
			handed = c.handOff()
			return
		}
		switch c.serveOne(head) {
		case handOff:
			handed = c.handed()
			return
		case closeConn:
			return
		}
		if c.w.closeAfter || c.s.shutting.Load() {
			return // the answer said so, or Shutdown began after it went out
		}
		if !c.state.CompareAndSwap(stateActive, stateIdle) {
			return
		}
	}
}

// rstAvoidanceDelay is how long a connection is left half-closed before it
// is closed, when the client may still be sending a request body (net/http
// waits as long).
const rstAvoidanceDelay = 500 * time.Millisecond

// closeWriteAndWait half-closes the connection and waits rstAvoidanceDelay,
// as net/http does after an answer that leaves a request body unread:
// closing a connection with unread data in it sends a reset, and a client
// that gets it may lose the answer it has not read yet.
func (c *conn) closeWriteAndWait() {
	if tc, ok := c.c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	time.Sleep(rstAvoidanceDelay)
}

// idleDeadline sets the read deadline for waiting for the next request. It
// moves the deadline only when it is more than a tenth of the idle timeout
// (at most a second) short of now + idle timeout, which spares nearly every
// request the cost of moving it.
func (c *conn) idleDeadline() {
	d := c.s.idleTimeout()
	if d <= 0 {
		if !c.deadline.IsZero() {
			c.setDeadline(time.Time{})
		}
		return
	}
	now := time.Now()
	slack := min(d/10, time.Second)
	if c.deadline.Before(now.Add(d-slack)) || c.deadline.After(now.Add(d)) {
		c.setDeadline(now.Add(d))
	}
}

func (c *conn) setDeadline(t time.Time) {
	c.deadline = t
	c.c.SetReadDeadline(t)
}

// readHead waits until the buffer holds a whole request head and returns it
// (still in the buffer, unread), or nil when the request is for net/http: a
// head the fast path does not serve, one too large for the buffer, or one
// the client cut short (net/http answers it). ok is false when the
// connection failed or timed out.
func (c *conn) readHead(first bool) (head []byte, ok bool) {
	limit := min(c.s.maxHeaderBytes(), bufSize)
	deadlineSet := first
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		if n := headEnd(b); n >= 0 {
			if n > limit || !plainHead(b[:n], c.s.lim) {
				return nil, true
			}
			return b[:n], true
		}
		if len(b) >= limit || hasBareLF(b) {
			// A head with a bare LF, which net/http reads, may never end
			// in CRLFCRLF: it is not plain.
			return nil, true
		}
		if !deadlineSet && c.s.ReadHeaderTimeout > 0 {
			c.setDeadline(time.Now().Add(c.s.ReadHeaderTimeout))
			deadlineSet = true
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, true
			}
			if err == io.EOF && len(b) > 0 {
				// The client ended the connection within a head:
				// net/http answers 400 Bad Request.
				return nil, true
			}
			return nil, false
		}
	}
}

// handOff gives the connection, with what is buffered, to net/http.
func (c *conn) handOff() bool {
	pre, _ := c.br.Peek(c.br.Buffered())
	pre = append([]byte(nil), pre...)
	c.setDeadline(time.Time{})
	c.s.handOff(c.c, pre)
	return true
}

// handed is handOff for a request whose head serveOne read but did not
// serve: the head is given back in front of what is buffered.
func (c *conn) handed() bool {
	rest, _ := c.br.Peek(c.br.Buffered())
	pre := make([]byte, 0, len(c.head)+len(rest))
	pre = append(append(pre, c.head...), rest...)
	c.setDeadline(time.Time{})
	c.s.handOff(c.c, pre)
	return true
}

type outcome int

const (
	served    outcome = iota
	handOff           // net/http is to serve the request; only its head was read
	closeConn         // the connection cannot go on
)

// serveOne reads the request whose head is head and answers it.
func (c *conn) serveOne(head []byte) outcome {
	// parsed stays on the stack: the request the handler gets is the copy
	// WithContext makes.
	var parsed http.Request
	var body *requestBody
	base := &parsed
	if c.parsePlain(head, base) {
		c.br.Discard(len(head))
		if base.ContentLength > 0 {
			body = &requestBody{closing: base.Close}
			body.own = lengthBody{r: io.LimitedReader{R: c.br, N: base.ContentLength}, closing: base.Close}
			body.rc = &body.own
		}
	} else {
		var out outcome
		if base, out = c.readRequest(head); base == nil {
			return out
		}
		if base.ContentLength > 0 {
			body = &requestBody{rc: base.Body, closing: base.Close}
		}
	}
	c.lastPOST = base.Method == http.MethodPost
	ctx, cancel := context.WithCancel(c.ctx)
	if body != nil {
		body.left.Store(base.ContentLength)
		body.conn, body.cancel = c.c, cancel
		body.clock = newBodyClock(c.s, time.Now())
		// The body's reads set the deadline from now on (see timeout.go);
		// the next wait for a head sets its own.
		c.deadline = time.Time{}
	}
	c.s.fast.Add(1) // before the answer, so that a client that has it sees the count
	req := base.WithContext(ctx)
	req.RemoteAddr = c.remote
	if body != nil {
		req.Body = body
	}
	w := &c.w
	w.reset(req, body)
	c.startWatch(cancel, body)
	func() {
		defer func() {
			if v := recover(); v != nil {
				c.stopWatch()
				cancel()
				// As net/http's server after a panic: what is left of
				// the body is read as its Close reads it (closing the
				// connection with it unread would reset the
				// connection under the answer), then what the answer
				// put in the connection's buffer is sent.
				if body != nil {
					body.Close()
				}
				c.bw.Flush()
				if body != nil {
					c.c.Close()
					body.end()
				}
				panic(v)
			}
		}()
		c.s.Handler.ServeHTTP(w, req)
	}()
	w.finish()
	c.stopWatch()
	cancel()
	if body != nil && body.timedOut.Load() {
		w.closeAfter = true
		w.lingerClose = false
	}
	if body != nil {
		if w.lingerClose {
			// The client may still be sending the body.
			c.closeWriteAndWait()
			w.closeAfter = true
		}
		if w.closeAfter {
			c.c.Close() // ends a read of the body still running
		}
		body.end()
	}
	return served
}

// readRequest reads the head with http.ReadRequest, for a head parsePlain
// does not take. It returns nil and handOff, with the part of the head it
// read given back, when ReadRequest refuses the head (net/http answers it).
func (c *conn) readRequest(head []byte) (*http.Request, outcome) {
	c.head = append(c.head[:0], head...)
	buffered := c.br.Buffered()
	req, err := http.ReadRequest(c.br)
	if err != nil || req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		// Give back the part of the head that was read. The buffer held
		// all of it, so reading it never refilled the buffer; if it had,
		// the bytes read could not be told apart.
		read := buffered - c.br.Buffered()
		if read < 0 || read > len(c.head) {
			return nil, closeConn
		}
		c.head = c.head[:read]
		return nil, handOff
	}
	return req, served
}

// startWatch arms the watch for the request starting now.
func (c *conn) startWatch(cancel context.CancelFunc, body *requestBody) {
	c.wmu.Lock()
	c.inRequest, c.cancel, c.body = true, cancel, body
	if c.timer == nil {
		c.timer = time.AfterFunc(watchGrace, c.watchFire)
	} else {
		c.timer.Reset(watchGrace)
	}
	c.wmu.Unlock()
}

// watchFire starts watching the connection of a request that has run for
// watchGrace, once its body was read (the watch must not race the
// handler's reads).
func (c *conn) watchFire() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.inRequest || c.watching {
		return
	}
	if c.body != nil && c.body.left.Load() > 0 {
		c.timer.Reset(watchGrace)
		return
	}
	c.watching = true
	c.watchDone = make(chan struct{})
	// The idle deadline must not end the watch of a long request.
	c.c.SetReadDeadline(time.Time{})
	go c.watch(c.cancel, c.watchDone)
}

// watch blocks until the client closes the connection (then cancels the
// request), sends more, or stopWatch wakes it with a past deadline. A
// connection closed under it (by Close) cancels the request too, as in
// net/http.
func (c *conn) watch(cancel context.CancelFunc, done chan struct{}) {
	defer close(done)
	gone := false
	err := c.raw.Read(func(fd uintptr) bool {
		wait, g := peekGone(fd)
		gone = g
		return !wait
	})
	if gone || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		cancel()
	}
}

// stopWatch ends the request's watch, waiting for a running one to stop.
func (c *conn) stopWatch() {
	c.wmu.Lock()
	c.inRequest, c.cancel, c.body = false, nil, nil
	c.timer.Stop()
	watching, done := c.watching, c.watchDone
	if watching {
		c.c.SetReadDeadline(aLongTimeAgo)
	}
	c.wmu.Unlock()
	if watching {
		<-done
		c.watching, c.watchDone = false, nil
		c.deadline = aLongTimeAgo // moved: the next wait sets its own
	}
}
