package h1serve

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServer serves h on a loopback listener until the test ends.
func startServer(t *testing.T, h http.Handler) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return s, ln.Addr().String()
}

// TestClosedBodyIsNotReadToItsEnd pins that a handler closing a large request
// body it did not read (ReverseProxy always closes the body) gets its answer
// out at once, with Connection: close, without the server waiting for the
// rest of the body: the client here sends 1 KiB of the 100 MB it announced.
func TestClosedBodyIsNotReadToItsEnd(t *testing.T) {
	s, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body.Close()
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
	if _, err := io.WriteString(c, head+strings.Repeat("a", 1024)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the rest of the body was not sent: %v", err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Errorf("answer: %d, Connection: close %v; want 413 and the connection closed", resp.StatusCode, resp.Close)
	}
	if fast, _ := s.Stats(); fast != 1 {
		t.Errorf("fast-path requests: %d, want 1", fast)
	}
}

// TestBodyReadAfterTheHandler pins that a goroutine still reading a request
// body after its handler returned (as net/http's Transport may, sending a
// body upstream) never reads from the connection once the next request is
// being read: its reads fail or see the end, and the pipelined next request
// is answered. The race detector watches the connection's buffer.
func TestBodyReadAfterTheHandler(t *testing.T) {
	late := make(chan error, 1)
	s, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body := r.Body
			go func() {
				time.Sleep(20 * time.Millisecond)
				_, err := body.Read(make([]byte, 16))
				late <- err
			}()
		}
		io.WriteString(w, r.Method)
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []string{"POST", "GET"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to %s: %v", want, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Errorf("answer: %q, want %q", b, want)
		}
	}
	select {
	case err := <-late:
		if err != io.EOF && err != http.ErrBodyReadAfterClose {
			t.Errorf("late read of the body: %v, want EOF or %v", err, http.ErrBodyReadAfterClose)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late read of the body never returned")
	}
	if fast, handed := s.Stats(); fast != 2 || handed != 0 {
		t.Errorf("fast-path requests %d, hand-offs %d; want 2 and 0", fast, handed)
	}
}
