// Package h1serve is strangler-proxy's HTTP/1.1 server: a lean loop for the
// plain requests that make up nearly all of a proxy's traffic, in front of a
// net/http server that gets every other connection.
//
// net/http's server spends, per request, a goroutine and a read to notice a
// client that goes away, several moves of the read deadline, and the
// machinery of its general-purpose response writer: in bench/proxy.sh,
// strangler-proxy spends about a fifth less CPU time per request on this
// server than on net/http's alone. This server serves a request itself
// only when its head passes a strict check (see plainHead), and builds the
// request from such a head as http.ReadRequest (net/http's own parser)
// would, with a fraction of its allocations (see parsePlain); the first
// request that does not pass, and the connection it came on, go to a
// net/http server with the same handler and limits, with the bytes already
// read. So an Expect: 100-continue, an Upgrade, a chunked body, HTTP/1.0, a
// malformed head or an oversized one is served, or refused, by net/http
// as before, unless the gate refuses it first.
//
// On the fast path an answer is framed and sent byte for byte as net/http's
// server sends it (diff_test.go checks this against a net/http server),
// with these differences, none of which touches what ReverseProxy does:
//   - changes a handler makes to the header after WriteHeader are sent if
//     the head has not been sent yet (net/http sends a copy of the header
//     taken at WriteHeader; see response);
//   - http.ResponseController's Hijack, SetReadDeadline, SetWriteDeadline
//     and EnableFullDuplex fail with http.ErrNotSupported, and the
//     ResponseWriter is not an http.CloseNotifier (ReverseProxy hijacks
//     only to switch protocols, for an Upgrade request, which net/http
//     serves).
//
// Both paths hold requests to the same rules, stricter than net/http's
// alone (issue 16): a handed connection is read by net/http through a gate
// that follows it request by request and refuses, before net/http sees
// them, heads that invite request smuggling or pass the limits (see
// gate.go; the fast path takes none of them), and request bodies are read
// with an idle and a total timeout (see timeout.go).
//
// On the fast path a client that goes away is noticed only once its request
// has run for watchGrace: from then on a goroutine peeks at the connection
// and cancels the request's context when the client closes it.
package h1serve

import (
	"bufio"
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 on a listener. Set its fields before Serve; they
// must not change after.
type Server struct {
	// Handler answers every request.
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's head; zero means none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long; zero
	// means ReadHeaderTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head (net/http's meaning); zero
	// means http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ErrorLog receives the server's errors (a handler's panic); nil
	// means the log package's standard logger.
	ErrorLog *log.Logger
	// Limits bounds request heads on both paths (see gate.go); zero
	// fields take their defaults.
	Limits Limits
	// BodyReadTimeout bounds each wait for more of a request body; zero
	// means DefaultBodyReadTimeout, a negative value none (see
	// timeout.go).
	BodyReadTimeout time.Duration
	// RequestTimeout bounds the time from a request's head to the end of
	// its body; zero means DefaultRequestTimeout, a negative value none.
	RequestTimeout time.Duration
	// DisableFastPath hands every connection to net/http's server (still
	// behind the gate and the body timeouts).
	DisableFastPath bool

	initOnce sync.Once
	std      *http.Server
	handoff  *handoffListener
	stdDone  chan error

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	shutting atomic.Bool

	fast, handed atomic.Uint64
	lim          Limits // Limits with its defaults
}

// Stats counts the requests taken on the fast path (read, and answered or
// being answered) and the connections handed to net/http.
func (s *Server) Stats() (fastRequests, handedConns uint64) {
	return s.fast.Load(), s.handed.Load()
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.conns = make(map[*conn]struct{})
		s.lim = s.Limits.withDefaults()
		s.std = &http.Server{
			Handler: http.HandlerFunc(s.stdServe),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, gateConnKey{}, c)
			},
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
			ErrorLog:          s.ErrorLog,
		}
		s.handoff = &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})}
		s.stdDone = make(chan error, 1)
		go func() { s.stdDone <- s.std.Serve(s.handoff) }()
	})
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return http.DefaultMaxHeaderBytes
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadHeaderTimeout
}

// Serve accepts connections on ln and serves them until Shutdown or Close,
// when it returns http.ErrServerClosed, or until Accept fails otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff.addr = ln.Addr()
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("http: Accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if s.DisableFastPath || !fastPathSupported(c) {
			s.handOff(c, nil)
			continue
		}
		sc := s.newConn(c)
		if sc == nil {
			c.Close()
			continue
		}
		go sc.serve()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// handOff gives c to the net/http server; pre is what was read from it and
// not yet served.
func (s *Server) handOff(c net.Conn, pre []byte) {
	s.handed.Add(1)
	if len(pre) > 0 {
		c = &prefixConn{Conn: c, pre: pre}
	}
	c = &gateConn{Conn: c, g: newGate(s.lim, s.maxHeaderBytes())}
	select {
	case s.handoff.ch <- c:
	case <-s.handoff.done:
		c.Close()
	}
}

// Shutdown stops accepting connections, closes idle ones, and waits for
// requests in flight (on both paths) to finish, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.shutting.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	stdErr := make(chan error, 1)
	go func() { stdErr <- s.std.Shutdown(ctx) }()
	poll := time.Millisecond
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		if s.closeIdle() {
			select {
			case err := <-stdErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			poll = min(2*poll, 500*time.Millisecond)
			t.Reset(poll)
		}
	}
}

// closeIdle closes the connections waiting for a request (those opened
// under 5 s ago and not yet sending one are left a chance, as net/http
// does) and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for c := range s.conns {
		st := c.state.Load()
		if st == stateNew && now.Sub(c.accepted) > 5*time.Second {
			if !c.state.CompareAndSwap(stateNew, stateClosed) {
				continue
			}
			c.c.Close()
			continue
		}
		if st == stateIdle && c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.c.Close()
		}
	}
	return len(s.conns) == 0
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.init()
	s.shutting.Store(true)
	s.mu.Lock()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.c.Close()
	}
	s.mu.Unlock()
	s.std.Close()
	return err
}

// handoffListener delivers handed-off connections to the net/http server.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr {
	if l.addr == nil {
		return &net.TCPAddr{}
	}
	return l.addr
}

// prefixConn is a connection whose first bytes were already read: Read
// returns them before reading from the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection after an error answer,
// as it does on a TCP connection.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

var (
	readerPool sync.Pool
	writerPool sync.Pool
)

const bufSize = 4096

func newReader(c net.Conn) *bufio.Reader {
	if v := readerPool.Get(); v != nil {
		br := v.(*bufio.Reader)
		br.Reset(c)
		return br
	}
	return bufio.NewReaderSize(c, bufSize)
}

func newWriter(c net.Conn) *bufio.Writer {
	if v := writerPool.Get(); v != nil {
		bw := v.(*bufio.Writer)
		bw.Reset(c)
		return bw
	}
	return bufio.NewWriterSize(c, bufSize)
}

// stackTrace returns the current goroutine's stack, for a handler's panic.
func stackTrace() []byte {
	buf := make([]byte, 64<<10)
	return buf[:runtime.Stack(buf, false)]
}
