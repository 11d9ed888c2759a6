package proxyserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests of hostile input send raw bytes to strangler-proxy, and where
// that documents the expectation to nginx and HAProxy too, each in front of
// a recording backend, and check both the client's answers and the bytes the
// backend received. nginx and HAProxy come from Debian's packages
// (scripts/ensure-peers.sh, run by make test); a test skips a peer whose
// binary is absent, and says so.

// recorder is a backend (net/http, answering "backend saw <path>") that
// records every byte it receives, over all its connections.
type recorder struct {
	url, addr string
	mu        sync.Mutex
	got       bytes.Buffer
	open      int // connections open now
}

func newRecorder(tb testing.TB) *recorder {
	tb.Helper()
	rec := &recorder{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "backend saw %s", r.URL.Path)
	}))
	s.Listener = &recordingListener{Listener: s.Listener, rec: rec}
	s.Start()
	tb.Cleanup(s.Close)
	rec.url, rec.addr = s.URL, s.Listener.Addr().String()
	return rec
}

// received is what the backend has received so far.
func (r *recorder) received() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got.String()
}

// openConns is the number of the backend's connections still open.
func (r *recorder) openConns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open
}

type recordingListener struct {
	net.Listener
	rec *recorder
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.rec.mu.Lock()
	l.rec.open++
	l.rec.mu.Unlock()
	return &recordingConn{Conn: c, rec: l.rec}, nil
}

type recordingConn struct {
	net.Conn
	rec  *recorder
	once sync.Once
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.mu.Lock()
	c.rec.got.Write(p[:n])
	c.rec.mu.Unlock()
	return n, err
}

func (c *recordingConn) Close() error {
	c.once.Do(func() {
		c.rec.mu.Lock()
		c.rec.open--
		c.rec.mu.Unlock()
	})
	return c.Conn.Close()
}

// exchange sends raw to addr, half-closes the connection when halfClose is
// set, and reads the answers until the server closes the connection. It
// returns the statuses of the answers (1xx skipped) and whether the server
// closed the connection within bound.
func exchange(tb testing.TB, addr, raw string, halfClose bool, bound time.Duration) (statuses []int, closed bool) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	go func() {
		// The server may refuse before it read everything: write apart.
		io.WriteString(c, raw)
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return statuses, !(errors.As(err, &ne) && ne.Timeout())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 {
			statuses = append(statuses, resp.StatusCode)
		}
	}
}

// strangler runs strangler-proxy with the recording backend as its
// monolith (and as the service of /svc), with the server settings given
// (YAML flow mapping entries), and returns its address.
func strangler(tb testing.TB, rec *recorder, server string) string {
	tb.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0}
server: {%s}
monolith: {url: %s}
services:
  svc: {url: %s}
routes:
  - {prefix: /svc, service: svc}
`, server, rec.url, rec.url)
	_, proxyURL, _ := startServer(tb, cfg, nil)
	return strings.TrimPrefix(proxyURL, "http://")
}
