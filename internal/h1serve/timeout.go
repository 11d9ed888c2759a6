package h1serve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// A request body whose client stalls must not hold the request, and the
// upstream connection its handler opened, for ever (issue 16: a
// Content-Length of 10 followed by 2 bytes held both connections for over
// 70 s). On both paths the server bounds the wait for each read of a body
// (Server.BodyReadTimeout, as nginx's client_body_timeout) and the time from
// a request's head to the end of its body (Server.RequestTimeout). When one
// passes, the body's Read fails with a *BodyReadError that matches
// ErrBodyTimeout, the request's context is canceled (which aborts an
// upstream request in flight), the server answers 408 itself if nothing was
// sent yet (what the handler writes from then on is dropped), and the
// connection is closed.

// ErrBodyTimeout is matched (errors.Is) by the error a request body's Read
// returns when the client sent nothing for Server.BodyReadTimeout, or did not
// finish the body within Server.RequestTimeout.
var ErrBodyTimeout = errors.New("request body timed out: the client stalled")

// BodyReadError is the error a request body's Read returns when the client
// is at fault: it stalled (Timeout is true, and the error matches
// ErrBodyTimeout), or the connection ended or failed before the body did
// (Err is then the read's own error, io.ErrUnexpectedEOF for one cut
// short). Its ClientFault method says so to code that must not count the
// failure against an upstream (a breaker, a rollout guard), without
// knowing this type.
type BodyReadError struct {
	// Err is the read's own error; nil for a timeout.
	Err error
	// Timeout is true when a body timeout passed.
	Timeout bool
}

// Error is the underlying read error's text (net/http's, for the same
// failure), or the timeout's.
func (e *BodyReadError) Error() string {
	if e.Timeout {
		return ErrBodyTimeout.Error()
	}
	return e.Err.Error()
}

// Unwrap returns ErrBodyTimeout for a timeout, else the read's own error.
func (e *BodyReadError) Unwrap() error {
	if e.Timeout {
		return ErrBodyTimeout
	}
	return e.Err
}

// ClientFault reports true: the client, not the upstream, failed the
// request.
func (e *BodyReadError) ClientFault() bool { return true }

// HTTPStatus is the answer such a failure calls for: 408 for a timeout,
// 400 otherwise.
func (e *BodyReadError) HTTPStatus() int {
	if e.Timeout {
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

// Default body timeouts.
const (
	DefaultBodyReadTimeout = 60 * time.Second
	DefaultRequestTimeout  = 5 * time.Minute
)

func (s *Server) bodyReadTimeout() time.Duration {
	if s.BodyReadTimeout == 0 {
		return DefaultBodyReadTimeout
	}
	return max(s.BodyReadTimeout, 0)
}

func (s *Server) requestTimeout() time.Duration {
	if s.RequestTimeout == 0 {
		return DefaultRequestTimeout
	}
	return max(s.RequestTimeout, 0)
}

// bodyClock computes a body read's deadline.
type bodyClock struct {
	idle  time.Duration // 0: none
	until time.Time     // zero: none
	set   time.Time     // the deadline last set
}

func newBodyClock(s *Server, start time.Time) bodyClock {
	bc := bodyClock{idle: s.bodyReadTimeout()}
	if d := s.requestTimeout(); d > 0 {
		bc.until = start.Add(d)
	}
	return bc
}

// next returns the deadline for a read starting now, and whether it must be
// set: the deadline moves only when it is more than a tenth of the idle
// timeout (at most a second) short, which spares most reads the cost.
func (bc *bodyClock) next(now time.Time) (time.Time, bool) {
	var d time.Time
	if bc.idle > 0 {
		d = now.Add(bc.idle)
	}
	if !bc.until.IsZero() && (d.IsZero() || bc.until.Before(d)) {
		d = bc.until
	}
	if d.IsZero() {
		return d, false
	}
	slack := min(bc.idle/10, time.Second)
	if !bc.set.IsZero() && !bc.set.Before(d.Add(-slack)) && !bc.set.After(d) {
		return d, false
	}
	bc.set = d
	return d, true
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// clientError wraps a body read's error, other than io.EOF, in a
// *BodyReadError.
func clientError(err error) error {
	switch {
	case err == nil, err == io.EOF, errors.Is(err, http.ErrBodyReadAfterClose):
		return err
	case isTimeout(err):
		return &BodyReadError{Timeout: true}
	}
	var be *BodyReadError
	if errors.As(err, &be) {
		return err
	}
	return &BodyReadError{Err: err}
}

// timeoutAnswer is the body of the 408 answer.
const timeoutAnswer = "408 Request Timeout: the request body was not received in time\n"

// gateConnKey is the context key of a request's *gateConn on net/http's
// path.
type gateConnKey struct{}

// stdServe is the handler of the net/http server behind the fast path: it
// runs the server's Handler with the body timeouts above, and tells the
// gate when an Upgrade request's answer is 101 (the connection then stops
// carrying HTTP/1 requests).
func (s *Server) stdServe(w http.ResponseWriter, r *http.Request) {
	var gc *gateConn
	if r.Header.Get("Upgrade") != "" {
		gc, _ = r.Context().Value(gateConnKey{}).(*gateConn)
	}
	hasBody := r.Body != nil && r.Body != http.NoBody
	if gc == nil && !hasBody {
		s.Handler.ServeHTTP(w, r)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sw := &stdWriter{ResponseWriter: w, tunnel: gc}
	r2 := r.WithContext(ctx)
	if hasBody {
		sb := &stdBody{
			rc:     r.Body,
			ctl:    http.NewResponseController(w),
			clock:  newBodyClock(s, time.Now()),
			cancel: cancel,
			w:      sw,
		}
		sw.body = sb
		r2.Body = sb
	}
	s.Handler.ServeHTTP(sw, r2)
	if !sw.wroteHeader && sw.body != nil && sw.body.timedOut.Load() {
		// The handler wrote nothing (a proxy takes the canceled context
		// for a client gone): net/http would send 200.
		sw.WriteHeader(http.StatusRequestTimeout)
	}
}

// stdBody is a request body on net/http's path, read with the body
// timeouts.
type stdBody struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	clock    bodyClock
	cancel   context.CancelFunc
	w        *stdWriter
	timedOut atomic.Bool
}

func (b *stdBody) Read(p []byte) (int, error) {
	if b.timedOut.Load() {
		return 0, &BodyReadError{Timeout: true}
	}
	if d, ok := b.clock.next(time.Now()); ok {
		if err := b.ctl.SetReadDeadline(d); err != nil {
			return 0, err
		}
	}
	n, err := b.rc.Read(p)
	if err != nil && isTimeout(err) {
		b.timedOut.Store(true)
		b.cancel()
	}
	return n, clientError(err)
}

func (b *stdBody) Close() error { return b.rc.Close() }

// stdWriter is the ResponseWriter of a request stdServe wraps.
type stdWriter struct {
	http.ResponseWriter
	body        *stdBody
	tunnel      *gateConn // the connection of an Upgrade request
	wroteHeader bool
	dropping    bool // the 408 was sent: the handler's writes are dropped
}

func (w *stdWriter) WriteHeader(code int) {
	if w.dropping {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.wroteHeader {
		w.ResponseWriter.WriteHeader(code) // net/http logs it
		return
	}
	w.wroteHeader = true
	if w.body != nil && w.body.timedOut.Load() {
		w.dropping = true
		h := w.Header()
		clear(h)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Connection", "close")
		w.ResponseWriter.WriteHeader(http.StatusRequestTimeout)
		io.WriteString(w.ResponseWriter, timeoutAnswer)
		return
	}
	if w.tunnel != nil && code == http.StatusSwitchingProtocols {
		w.tunnel.tunnel.Store(true)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *stdWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.dropping {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush is http.Flusher's, for handlers that assert it rather than use an
// http.ResponseController.
func (w *stdWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack is http.Hijacker's, for the same handlers.
func (w *stdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets an http.ResponseController reach net/http's writer.
func (w *stdWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
