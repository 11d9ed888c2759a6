package routing

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawBackend is an upstream written against the socket: it reads requests
// with http.ReadRequest, keeps the raw bytes of every connection, and lets
// the test write each answer byte for byte, so that it can misbehave in
// ways an http.Server never would.
type rawBackend struct {
	addr   string
	answer func(conn net.Conn, req *http.Request, body []byte)

	mu     sync.Mutex
	raw    []*bytes.Buffer // per connection, in accept order
	reqs   []string        // "METHOD /path" of every complete request read
	bodies [][]byte
}

// recordingConn keeps every byte read from a connection.
type recordingConn struct {
	net.Conn
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.b.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// newRawBackend starts a raw backend; answer writes the answer to each
// request (nil: a 200 with "METHOD PATH" as its body).
func newRawBackend(tb testing.TB, answer func(conn net.Conn, req *http.Request, body []byte)) *rawBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &rawBackend{addr: ln.Addr().String(), answer: answer}
	if b.answer == nil {
		b.answer = func(conn net.Conn, req *http.Request, _ []byte) {
			body := req.Method + " " + req.URL.RequestURI()
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		}
	}
	var wg sync.WaitGroup
	var conns sync.Map
	tb.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Go(func() { b.serve(c) })
		}
	})
	return b
}

func (b *rawBackend) URL() string { return "http://" + b.addr }

func (b *rawBackend) serve(c net.Conn) {
	defer c.Close()
	buf := new(bytes.Buffer)
	b.mu.Lock()
	b.raw = append(b.raw, buf)
	b.mu.Unlock()
	br := bufio.NewReader(recordingConn{Conn: c, b: buf, mu: &b.mu})
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return // a body cut short: never a complete request
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, req.Method+" "+req.URL.RequestURI())
		b.bodies = append(b.bodies, body)
		b.mu.Unlock()
		b.answer(c, req, body)
	}
}

// requests returns "METHOD /path" of every complete request received.
func (b *rawBackend) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.reqs...)
}

// received returns every byte received, over all connections.
func (b *rawBackend) received() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s strings.Builder
	for _, r := range b.raw {
		s.Write(r.Bytes())
	}
	return s.String()
}

// rawAnswer is what a client got for raw bytes sent.
type rawAnswer struct {
	status int
	header http.Header
	body   string
	err    error // reading the answer failed (the proxy closed without one)
}

// sendRaw opens a connection to addr, writes raw, and reads one answer to
// method (the answer to a HEAD has no body).
func sendRaw(tb testing.TB, addr, method, raw string) rawAnswer {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second)) // only against a hung test
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatal(err)
	}
	return readRawAnswer(bufio.NewReader(c), method)
}

func readRawAnswer(br *bufio.Reader, method string) rawAnswer {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return rawAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

// addr is the host:port of a test proxy.
func (tp *testProxy) addr() string { return strings.TrimPrefix(tp.srv.URL, "http://") }
