package h1serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// safety bounds every wait of these tests, so that a server that misbehaves
// fails them instead of hanging them.
const safety = 10 * time.Second

// serve runs s on a new loopback TCP listener until the test ends and
// returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, ln)
}

// serveOn is serve on a listener the test made; it returns the listener's
// address.
func serveOn(t *testing.T, s *Server, ln net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-done:
		case <-time.After(safety):
			t.Errorf("Serve still running %s after Close", safety)
		}
	})
	return ln.Addr().String()
}

// serveWait is serve for tests that check what Serve returns: the channel
// receives it.
func serveWait(t *testing.T, s *Server) (addr string, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String(), done
}

// clientConn is a raw client connection with a reader for its answers.
type clientConn struct {
	net.Conn
	br *bufio.Reader
}

// dial opens a connection to addr whose reads and writes fail after the
// safety bound.
func dial(t *testing.T, addr string) *clientConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(safety))
	return &clientConn{Conn: c, br: bufio.NewReader(c)}
}

// send writes raw bytes, failing the test if they cannot be written.
func (c *clientConn) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write %.40q: %v", s, err)
	}
}

// get sends a plain GET for path.
func (c *clientConn) get(t *testing.T, path string) {
	t.Helper()
	c.send(t, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
}

// answer reads the next final answer (skipping 1xx ones) and its body.
func (c *clientConn) answer(t *testing.T) (*http.Response, string) {
	t.Helper()
	for {
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode <= 199 {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read answer body: %v", err)
		}
		return resp, string(b)
	}
}

// expect reads the next answer and checks its status and body.
func (c *clientConn) expect(t *testing.T, what string, status int, body string) *http.Response {
	t.Helper()
	resp, b := c.answer(t)
	if resp.StatusCode != status || b != body {
		t.Fatalf("%s: got %d %q, want %d %q", what, resp.StatusCode, b, status, body)
	}
	return resp
}

// expectClosed checks that the server closes the connection within bound,
// sending nothing more.
func (c *clientConn) expectClosed(t *testing.T, what string, bound time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound))
	b, err := io.ReadAll(c.br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: connection still open after %s", what, bound)
	case len(b) > 0:
		t.Fatalf("%s: got %q before the close, want nothing", what, b)
	}
	// EOF, or a reset: either way the server closed it.
}

// expectStats checks what s.Stats counts, waiting a moment for the count of
// a request just answered: the fast path counts a request once its answer
// is sent.
func expectStats(t *testing.T, s *Server, fast, handed uint64) {
	t.Helper()
	deadline := time.Now().Add(safety)
	for {
		f, h := s.Stats()
		if f == fast && h == handed {
			return
		}
		if f > fast || h > handed || time.Now().After(deadline) {
			t.Errorf("Stats: got %d fast, %d handed off, want %d, %d", f, h, fast, handed)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// echo answers with the request's method and path.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
})

// blocker is a handler that reports each request on started, then blocks
// until its context ends (reported on canceled) or it is released.
type blocker struct {
	started  chan string
	canceled chan string
	release  chan struct{}
}

func newBlocker(t *testing.T) *blocker {
	b := &blocker{started: make(chan string, 8), canceled: make(chan string, 8), release: make(chan struct{})}
	t.Cleanup(func() { close(b.release) })
	return b
}

func (b *blocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "read %d; ", n)
	}
	if !strings.HasPrefix(r.URL.Path, "/block") {
		fmt.Fprintf(w, "%s %v", r.URL.Path, r.Context().Err())
		return
	}
	b.started <- r.URL.Path
	select {
	case <-r.Context().Done():
		b.canceled <- r.URL.Path
	case <-b.release:
	case <-time.After(safety):
	}
	fmt.Fprintf(w, "%s %v", r.URL.Path, r.Context().Err())
}

// wait receives from ch within the safety bound.
func wait(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(safety):
		t.Fatalf("no %s within %s", what, safety)
		return ""
	}
}

// TestClientGoneCancelsRequest checks that a request whose client closes its
// connection has its context canceled, whether the client goes before or
// after the watch starts (watchGrace), and once a body was read.
func TestClientGoneCancelsRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		request string
		after   time.Duration // how long after the handler starts the client closes; < 0: before
	}{
		{"GET, client closes right after sending", "GET /block HTTP/1.1\r\nHost: x\r\n\r\n", -1},
		{"GET, client closes after the watch started", "GET /block HTTP/1.1\r\nHost: x\r\n\r\n", 300 * time.Millisecond},
		{"GET, client closes before the watch starts", "GET /block HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"POST whose body the handler read", "POST /block HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 300 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := newBlocker(t)
			s := &Server{Handler: b}
			addr := serve(t, s)
			cc := dial(t, addr)
			cc.send(t, c.request)
			if c.after < 0 {
				cc.Close()
			}
			wait(t, b.started, "request at the handler")
			if c.after >= 0 {
				time.Sleep(c.after)
				cc.Close()
			}
			wait(t, b.canceled, "cancellation of the request's context")
		})
	}
}

// TestPipelinedRequestDoesNotCancel checks that a request sent while another
// is being served is not taken for a client that went away: the first
// request runs on uncanceled, and both are answered in order.
func TestPipelinedRequestDoesNotCancel(t *testing.T) {
	t.Parallel()
	b := newBlocker(t)
	s := &Server{Handler: b}
	addr := serve(t, s)
	cc := dial(t, addr)
	cc.get(t, "/block")
	wait(t, b.started, "request at the handler")
	cc.get(t, "/next")
	// Long enough for the watch to start and see the second request.
	time.Sleep(3 * watchGrace)
	select {
	case p := <-b.canceled:
		t.Fatalf("%s: context canceled by a pipelined request", p)
	default:
	}
	b.release <- struct{}{}
	cc.expect(t, "first answer", http.StatusOK, "/block <nil>")
	cc.expect(t, "second answer", http.StatusOK, "/next <nil>")
	expectStats(t, s, 2, 0)
}

// slowHandler answers /slow once released, then 500 ms more (reporting its
// start on started and its end on done), and every other path at once. It
// reads a request's body first.
type slowHandler struct {
	started chan string
	release chan struct{}
	done    atomic.Bool
}

func (h *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/slow" {
		h.started <- r.Proto
		select {
		case <-h.release:
		case <-time.After(safety):
		}
		time.Sleep(500 * time.Millisecond)
		defer h.done.Store(true)
	}
	io.WriteString(w, r.URL.Path)
}

// TestShutdownWaitsForRequests checks Shutdown with a slow request in
// flight, on the fast path or on a connection handed to net/http, and an
// idle keep-alive connection: the idle connection is closed, new ones are
// refused, the slow request is answered in full with Connection: close, and
// Shutdown and Serve return only then.
func TestShutdownWaitsForRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		request    string
		wantHanded uint64
	}{
		{"fast path", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"handed off: Expect", "POST /slow HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", 1},
		{"handed off: HTTP/1.0", "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := &slowHandler{started: make(chan string, 1), release: make(chan struct{})}
			s := &Server{Handler: h}
			addr, served := serveWait(t, s)
			idle := dial(t, addr)
			idle.get(t, "/idle")
			idle.expect(t, "idle connection's request", http.StatusOK, "/idle")
			slow := dial(t, addr)
			slow.send(t, c.request)
			wait(t, h.started, "slow request at the handler")

			ctx, cancel := context.WithTimeout(context.Background(), safety)
			defer cancel()
			shut := make(chan error, 1)
			var handlerDone atomic.Bool // whether the slow handler had returned when Shutdown did
			go func() {
				err := s.Shutdown(ctx)
				handlerDone.Store(h.done.Load())
				shut <- err
			}()

			idle.expectClosed(t, "idle connection", safety)
			testkit.Eventually(t, safety, "new connections to be refused", func() bool {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
			// Shutdown has begun: the slow request may end.
			close(h.release)
			resp := slow.expect(t, "slow request", http.StatusOK, "/slow")
			// For an HTTP/1.1 answer Close means Connection: close (which
			// http.ReadResponse takes out of the header).
			if !resp.Close {
				t.Errorf("slow request's answer: got %s %v, want it to close the connection", resp.Proto, resp.Header)
			}
			slow.expectClosed(t, "slow request's connection", safety)
			select {
			case err := <-shut:
				if err != nil {
					t.Errorf("Shutdown: got %v, want nil", err)
				}
			case <-time.After(safety):
				t.Fatal("Shutdown still running after the last request ended")
			}
			if !handlerDone.Load() {
				t.Error("Shutdown returned before the slow request's handler did")
			}
			select {
			case err := <-served:
				if !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("Serve: got %v, want http.ErrServerClosed", err)
				}
			case <-time.After(safety):
				t.Fatal("Serve still running after Shutdown")
			}
			if _, handed := s.Stats(); handed != c.wantHanded {
				t.Errorf("connections handed off: got %d, want %d", handed, c.wantHanded)
			}
		})
	}
}

// TestShutdownContextEnds checks that Shutdown gives up with the context's
// error when a request is still in flight.
func TestShutdownContextEnds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		request string
	}{
		{"fast path", "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"handed off", "GET /block HTTP/1.0\r\nHost: x\r\n\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := newBlocker(t)
			s := &Server{Handler: b}
			addr := serve(t, s)
			cc := dial(t, addr)
			cc.send(t, c.request)
			wait(t, b.started, "request at the handler")
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			shut := make(chan error, 1)
			go func() { shut <- s.Shutdown(ctx) }()
			select {
			case err := <-shut:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Shutdown: got %v, want %v", err, context.Canceled)
				}
			case <-time.After(safety):
				t.Fatal("Shutdown with an ended context still running")
			}
		})
	}
}

// TestServeAfterShutdown checks that a server shut down or closed before it
// serves does so at once, and that Serve then refuses to serve.
func TestServeAfterShutdown(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		stop func(*Server) error
	}{
		{"Shutdown", func(s *Server) error { return s.Shutdown(context.Background()) }},
		{"Close", func(s *Server) error { return s.Close() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: echo}
			stopped := make(chan error, 1)
			go func() { stopped <- c.stop(s) }()
			select {
			case err := <-stopped:
				if err != nil {
					t.Errorf("%s: got %v, want nil", c.name, err)
				}
			case <-time.After(safety):
				t.Fatalf("%s of a server that never served still running", c.name)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve after %s: got %v, want http.ErrServerClosed", c.name, err)
			}
		})
	}
}

// TestShutdownUnderLoad shuts a server down while clients send requests on
// kept-alive connections, on the fast path and handed off: Shutdown and
// Serve return as they should, and every answer the clients got is whole
// and right (requests may fail once the server is going).
func TestShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})}
	addr, served := serveWait(t, s)
	stop := make(chan struct{})
	errs := make(chan error, 8)
	var answered atomic.Int64
	for i := range 8 {
		go func() {
			tr := &http.Transport{ExpectContinueTimeout: safety}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: safety}
			for n := 0; ; n++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				path := fmt.Sprintf("/%d/%d", i, n)
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
				want := "GET " + path + " "
				if i%4 == 0 {
					// Expect: 100-continue: handed to net/http.
					req, _ = http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader("body"))
					req.Header.Set("Expect", "100-continue")
					want = "POST " + path + " body"
				}
				resp, err := client.Do(req)
				if err != nil {
					continue // refused or closed: the server is going
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(b) != want {
					errs <- fmt.Errorf("%s: got %d %q (%v), want 200 %q", path, resp.StatusCode, b, err, want)
					<-stop
					return
				}
				answered.Add(1)
			}
		}()
	}
	testkit.Eventually(t, safety, "requests answered before Shutdown", func() bool { return answered.Load() >= 50 })
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: got %v, want nil", err)
	}
	close(stop)
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: got %v, want http.ErrServerClosed", err)
		}
	case <-time.After(safety):
		t.Fatal("Serve still running after Shutdown")
	}
	if fast, handed := s.Stats(); fast == 0 || handed == 0 {
		t.Errorf("Stats: got %d fast, %d handed off, want both paths used", fast, handed)
	}
}

// TestCloseClosesEverything checks that Close closes idle connections and
// connections with a request in flight, on both paths, at once, and cancels
// the requests' contexts, as net/http's Close does: whether or not the
// fast path's watch of its connection has started yet.
func TestCloseClosesEverything(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		after time.Duration // how long the requests run before Close
	}{
		{"before the watch starts", 0},
		{"once the watch runs", 3 * watchGrace},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := newBlocker(t)
			s := &Server{Handler: b}
			addr, served := serveWait(t, s)
			idle := dial(t, addr)
			idle.get(t, "/idle")
			idle.expect(t, "idle connection's request", http.StatusOK, "/idle <nil>")
			fast := dial(t, addr)
			fast.get(t, "/block-fast")
			wait(t, b.started, "fast path request at the handler")
			handed := dial(t, addr)
			handed.send(t, "GET /block-handed HTTP/1.0\r\nHost: x\r\n\r\n")
			wait(t, b.started, "handed-off request at the handler")
			time.Sleep(c.after)

			if err := s.Close(); err != nil {
				t.Errorf("Close: got %v, want nil", err)
			}
			for _, conn := range []struct {
				name string
				cc   *clientConn
			}{{"idle", idle}, {"fast path", fast}, {"handed off", handed}} {
				conn.cc.expectClosed(t, conn.name+" connection", safety)
			}
			canceled := map[string]bool{}
			timeout := time.After(safety)
			for len(canceled) < 2 {
				select {
				case p := <-b.canceled:
					canceled[p] = true
					continue
				case <-timeout:
				}
				break
			}
			if !canceled["/block-fast"] || !canceled["/block-handed"] {
				t.Errorf("requests whose context Close canceled: got %v, want /block-fast and /block-handed", canceled)
			}
			select {
			case err := <-served:
				if !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("Serve: got %v, want http.ErrServerClosed", err)
				}
			case <-time.After(safety):
				t.Fatal("Serve still running after Close")
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Error("dial after Close: got a connection, want it refused")
			}
		})
	}
}

// TestReadHeaderTimeout checks that a client that sends part of a request
// head and stalls is disconnected after about ReadHeaderTimeout, on a new
// connection and between requests of a kept-alive one.
func TestReadHeaderTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	cases := []struct {
		name  string
		first bool // the first request of the connection is answered first
	}{
		{"new connection", false},
		{"second request", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: echo, ReadHeaderTimeout: timeout, IdleTimeout: safety}
			addr := serve(t, s)
			start := time.Now()
			cc := dial(t, addr)
			if c.first {
				cc.get(t, "/first")
				cc.expect(t, "first request", http.StatusOK, "GET /first")
				start = time.Now()
			}
			cc.send(t, "GET /stalled HTTP/1.1\r\nHost: x\r\n")
			cc.expectClosed(t, "stalled request", timeout+2*time.Second)
			// The server must not close it well before the timeout.
			if took := time.Since(start); took < timeout/2 {
				t.Errorf("closed after %s, before the timeout of %s", took, timeout)
			}
		})
	}
}

// TestIdleTimeout checks that an idle keep-alive connection is closed after
// IdleTimeout, while one that keeps sending requests stays open.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	t.Run("idle connection closed", func(t *testing.T) {
		t.Parallel()
		s := &Server{Handler: echo, ReadHeaderTimeout: safety, IdleTimeout: idle}
		addr := serve(t, s)
		cc := dial(t, addr)
		cc.get(t, "/a")
		cc.expect(t, "request", http.StatusOK, "GET /a")
		start := time.Now()
		cc.expectClosed(t, "idle connection", idle+2*time.Second)
		if took := time.Since(start); took < idle/2 {
			t.Errorf("closed after %s idle, before the timeout of %s", took, idle)
		}
	})
	t.Run("busy connection kept", func(t *testing.T) {
		t.Parallel()
		s := &Server{Handler: echo, ReadHeaderTimeout: safety, IdleTimeout: idle}
		addr := serve(t, s)
		cc := dial(t, addr)
		for end, i := time.Now().Add(4*idle), 0; time.Now().Before(end); i++ {
			path := fmt.Sprintf("/%d", i)
			cc.get(t, path)
			cc.expect(t, "request "+path, http.StatusOK, "GET "+path)
			time.Sleep(idle / 3)
		}
		if fast, handed := s.Stats(); fast < 4 || handed != 0 {
			t.Errorf("Stats: got %d fast, %d handed off, want at least 4 fast on one connection", fast, handed)
		}
	})
}

// TestSlowRequestBody checks that a body that trickles in for longer than
// the idle and header timeouts is still read in full: bodies have no
// deadline, as in net/http.
func TestSlowRequestBody(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %q", r.URL.Path, b)
	}), ReadHeaderTimeout: timeout, IdleTimeout: timeout}
	addr := serve(t, s)
	cc := dial(t, addr)
	const body = "0123456789"
	cc.send(t, fmt.Sprintf("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)))
	for i := range len(body) {
		time.Sleep(100 * time.Millisecond)
		cc.send(t, body[i:i+1])
	}
	cc.expect(t, "slow body", http.StatusOK, `/slow "0123456789"`)
	cc.get(t, "/next")
	cc.expect(t, "next request", http.StatusOK, `/next ""`)
}

// TestHandOffMidConnection checks a connection whose plain requests are
// followed by one the fast path does not serve, and more: every request is
// answered in order, the first ones on the fast path, and the connection is
// handed to net/http once.
func TestHandOffMidConnection(t *testing.T) {
	t.Parallel()
	requests := []struct{ raw, want string }{
		{"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a"},
		{"GET /b HTTP/1.1\r\nHost: x\r\n\r\n", "GET /b"},
		{"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", "POST /c hello"},
		{"GET /d HTTP/1.1\r\nHost: x\r\n\r\n", "GET /d"},
		{"GET /e HTTP/1.1\r\nHost: x\r\n\r\n", "GET /e"},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		if len(b) > 0 {
			fmt.Fprintf(w, " %s", b)
		}
	})
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%t", pipelined), func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: handler}
			addr := serve(t, s)
			cc := dial(t, addr)
			if pipelined {
				var all strings.Builder
				for _, r := range requests {
					all.WriteString(r.raw)
				}
				cc.send(t, all.String())
			}
			for i, r := range requests {
				if !pipelined {
					cc.send(t, r.raw)
				}
				cc.expect(t, fmt.Sprintf("request %d", i), http.StatusOK, r.want)
			}
			expectStats(t, s, 2, 1)
		})
	}
}

// TestRejectedHeadHandedOff checks a head that passes the fast path's check
// but that http.ReadRequest rejects (a bad escape in the target), after a
// plain request on the same connection: the part of the head already read
// is given back, and net/http answers 400 as it would alone.
func TestRejectedHeadHandedOff(t *testing.T) {
	t.Parallel()
	s := &Server{Handler: echo}
	addr := serve(t, s)
	cc := dial(t, addr)
	cc.get(t, "/a")
	cc.expect(t, "plain request", http.StatusOK, "GET /a")
	cc.send(t, "GET /%zz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n")
	resp := cc.expect(t, "request with a bad escape", http.StatusBadRequest, "400 Bad Request")
	if !resp.Close {
		t.Errorf("answer to a bad request: got Connection: close %t, want true", resp.Close)
	}
	cc.expectClosed(t, "connection after a bad request", safety)
	expectStats(t, s, 1, 1)
}

// TestLargeHeads checks that a head larger than the fast path's buffer is
// handed off and answered, and that one over MaxHeaderBytes gets net/http's
// 431.
func TestLargeHeads(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		max        int
		value      int // bytes of an X-Big header
		wantStatus int
	}{
		{"over 4 KiB", 0, 6 << 10, http.StatusOK},
		// net/http allows 4096 bytes over MaxHeaderBytes.
		{"over MaxHeaderBytes", 1 << 10, 16 << 10, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: echo, MaxHeaderBytes: c.max}
			addr := serve(t, s)
			cc := dial(t, addr)
			cc.send(t, "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", c.value)+"\r\n\r\n")
			resp, body := cc.answer(t)
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, c.wantStatus)
			}
			if c.wantStatus == http.StatusOK {
				if body != "GET /big" {
					t.Errorf("body: got %q, want %q", body, "GET /big")
				}
				cc.get(t, "/next")
				cc.expect(t, "next request", http.StatusOK, "GET /next")
			}
			expectStats(t, s, 0, 1)
		})
	}
}

// TestUnreadRequestBody checks what happens to a body the handler leaves
// (partly) unread: a small rest is drained and the connection goes on; a
// large one closes the connection after the answer, which says so.
func TestUnreadRequestBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		size      int
		read      int // bytes the handler reads
		wantClose bool
	}{
		{"small body ignored", 1 << 10, 0, false},
		{"half of a 10 KiB body read", 10 << 10, 5 << 10, false},
		{"1 MiB body ignored", 1 << 20, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.CopyN(io.Discard, r.Body, int64(c.read))
				fmt.Fprintf(w, "%s read %d", r.URL.Path, n)
			})}
			addr := serve(t, s)
			cc := dial(t, addr)
			// The body is written while the answer is read: the server
			// may answer before it has all of it.
			wrote := make(chan error, 1)
			go func() {
				_, err := fmt.Fprintf(cc, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", c.size, strings.Repeat("x", c.size))
				wrote <- err
			}()
			resp := cc.expect(t, "request with a body", http.StatusOK, fmt.Sprintf("/body read %d", c.read))
			if c.wantClose {
				// Connection: close, which http.ReadResponse takes
				// out of the header.
				if !resp.Close {
					t.Errorf("answer: got header %v, want Connection: close", resp.Header)
				}
				cc.expectClosed(t, "connection after an unread large body", safety)
				return
			}
			if err := <-wrote; err != nil {
				t.Fatalf("write request: %v", err)
			}
			if resp.Close {
				t.Errorf("answer: got header %v, want the connection kept", resp.Header)
			}
			cc.get(t, "/next")
			cc.expect(t, "next request", http.StatusOK, "/next read 0")
			expectStats(t, s, 2, 0)
		})
	}
}

// TestClosedRequestBody checks a body the handler closes unread, as
// ReverseProxy's transport does when the upstream answers before taking it
// all. As in net/http, a small rest is drained and the connection goes on,
// and a large rest is left unread, even one the client has not sent yet:
// the answer goes out at once and the connection closes after it. Reads
// after Close fail.
func TestClosedRequestBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		size      int
		sent      int // bytes of the body the client sends before it waits for the answer
		wantClose bool
	}{
		{"small body", 1 << 10, 1 << 10, false},
		{"1 MiB body, all sent", 1 << 20, 1 << 20, true},
		{"1 MiB body, 64 KiB sent", 1 << 20, 64 << 10, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Body.Close()
				_, err := r.Body.Read(make([]byte, 1))
				fmt.Fprintf(w, "%s closed; read after: %v", r.URL.Path, err)
			})}
			addr := serve(t, s)
			cc := dial(t, addr)
			go fmt.Fprintf(cc, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", c.size, strings.Repeat("x", c.sent))
			resp := cc.expect(t, "request with a body", http.StatusOK, "/body closed; read after: "+http.ErrBodyReadAfterClose.Error())
			if resp.Close != c.wantClose {
				t.Errorf("answer: got Connection: close %t, want %t", resp.Close, c.wantClose)
			}
			if c.wantClose {
				cc.expectClosed(t, "connection after a large body closed unread", safety)
				return
			}
			cc.get(t, "/next")
			// Without a body, r.Body is http.NoBody.
			cc.expect(t, "next request", http.StatusOK, "/next closed; read after: EOF")
		})
	}
}

// TestUnreadLargeBodyAnswerArrives checks that a client uploading a large
// body the handler does not take (here answered 413) gets the answer, not a
// reset: as net/http's server, the server half-closes the connection and
// waits a moment before it closes it with the body unread.
func TestUnreadLargeBodyAnswerArrives(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		close bool // the handler closes the body, rather than ignoring it
	}{
		{"body ignored", false},
		{"body closed", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if c.close {
					r.Body.Close()
				}
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			})}
			addr := serve(t, s)
			body := make([]byte, 16<<20)
			for i := range 3 {
				client := &http.Client{Transport: &http.Transport{}, Timeout: safety}
				resp, err := client.Post("http://"+addr+"/upload", "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					t.Fatalf("upload %d: got %v, want the 413 answer", i, err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("upload %d: got %d %q (%v), want 413", i, resp.StatusCode, b, err)
				}
				client.CloseIdleConnections()
			}
		})
	}
}

// TestHandlerPanic checks that a handler's panic closes its connection
// without an answer while the server goes on serving others, and that it is
// logged with its stack unless it is http.ErrAbortHandler.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		value   any
		wantLog bool
	}{
		{"panic", "handler exploded", true},
		{"ErrAbortHandler", http.ErrAbortHandler, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var logBuf testkit.Buffer
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/panic" {
					io.WriteString(w, "partial")
					panic(c.value)
				}
				echo(w, r)
			}), ErrorLog: log.New(&logBuf, "", 0)}
			addr := serve(t, s)
			other := dial(t, addr)
			other.get(t, "/before")
			other.expect(t, "other connection before the panic", http.StatusOK, "GET /before")
			cc := dial(t, addr)
			cc.get(t, "/panic")
			cc.expectClosed(t, "panicking request's connection", safety)
			other.get(t, "/after")
			other.expect(t, "other connection after the panic", http.StatusOK, "GET /after")
			fresh := dial(t, addr)
			fresh.get(t, "/new")
			fresh.expect(t, "new connection after the panic", http.StatusOK, "GET /new")

			logged := logBuf.String()
			if !c.wantLog {
				if logged != "" {
					t.Errorf("log: got %q, want nothing", logged)
				}
				return
			}
			for _, want := range []string{"http: panic serving 127.0.0.1:", "handler exploded", "goroutine ", "TestHandlerPanic"} {
				if !strings.Contains(logged, want) {
					t.Errorf("log: got %q, want it to contain %q", logged, want)
				}
			}
		})
	}
}

// TestNonTCPConnectionsHandedOff checks that connections the fast path
// cannot watch (here on a unix socket) are all served by net/http.
func TestNonTCPConnectionsHandedOff(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo}
	serveOn(t, s, ln)

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if fastPathSupported(c) {
		t.Error("fastPathSupported(unix connection): got true, want false")
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}, Timeout: safety}
	defer client.CloseIdleConnections()
	for i := range 3 {
		want := fmt.Sprintf("GET /%d", i)
		resp, err := client.Get(fmt.Sprintf("http://unix/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != want {
			t.Errorf("request %d: got %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
	if fast, handed := s.Stats(); fast != 0 || handed < 1 {
		t.Errorf("Stats: got %d fast, %d handed off, want 0 fast", fast, handed)
	}
}
