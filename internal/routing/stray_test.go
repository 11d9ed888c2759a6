package routing

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestStrayUpstreamBytesNeverAnswerAnotherClient pins issue 16, finding 1:
// a pooled upstream connection that came back less than 10 ms before was
// reused for a GET without a look at it, so bytes an upstream wrote after
// its answer were read as the answer to the next client's request. A row of
// clients, one connection each, must each get their own answer, and the
// upstream must receive each request once.
func TestStrayUpstreamBytesNeverAnswerAnotherClient(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray!"
	cases := []struct {
		name   string
		method string
		// answer is the upstream's answer to a request for body; extra
		// is written after it, at once or after a pause.
		answer func(method, body string) string
		extra  string
		pause  time.Duration
	}{
		{"a second answer in the same write", "GET", plainAnswer, stray, 0},
		{"a second answer right after", "GET", plainAnswer, stray, -1},
		{"a second answer 5ms after", "GET", plainAnswer, stray, 5 * time.Millisecond},
		{"a body longer than its Content-Length", "GET", plainAnswer, "trailing junk", 0},
		{"a body longer than its Content-Length, 5ms after", "GET", plainAnswer, "trailing junk", 5 * time.Millisecond},
		{"a body on a HEAD answer", "HEAD", plainAnswer, "body of a HEAD answer", 0},
		{"a body on a HEAD answer, 5ms after", "HEAD", plainAnswer, "body of a HEAD answer", 5 * time.Millisecond},
		{"a stray byte 5ms after", "OPTIONS", plainAnswer, "x", 5 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			written := make(chan struct{}, 1)
			up := newRawBackend(t, func(conn net.Conn, req *http.Request, _ []byte) {
				a := c.answer(req.Method, req.URL.Path)
				switch {
				case c.pause == 0:
					io.WriteString(conn, a+c.extra)
				default:
					io.WriteString(conn, a)
					if c.pause > 0 {
						time.Sleep(c.pause)
					}
					io.WriteString(conn, c.extra)
				}
				written <- struct{}{}
			})
			mono := newBackend(t, "monolith", nil)
			tp := newTestProxy(t, h1Config(mono.URL, up.URL()))

			var want []string
			for i := range 8 {
				path := fmt.Sprintf("/api/users/%d", i)
				want = append(want, c.method+" "+path)
				got := sendRaw(t, tp.addr(), c.method, c.method+" "+path+" HTTP/1.1\r\nHost: shop.example\r\n\r\n")
				if got.err != nil {
					t.Fatalf("client %d: %v", i, got.err)
				}
				wantLen := strconv.Itoa(len(path))
				if got.status != 200 || got.header.Get("Content-Length") != wantLen || c.method != "HEAD" && got.body != path {
					t.Fatalf("client %d: got %d %q (Content-Length %s), want 200 %q: another client's answer",
						i, got.status, got.body, got.header.Get("Content-Length"), path)
				}
				// The next client comes once the upstream wrote its stray
				// bytes: they are in the proxy's socket when it picks a
				// connection for the next request.
				<-written
			}
			if got := up.requests(); !slices.Equal(got, want) {
				t.Errorf("upstream received %q, want %q", got, want)
			}
			if n := tp.fallbacks("/api/users", "timeout"); n != 0 {
				t.Errorf("fallbacks: got %v, want 0", n)
			}
		})
	}
}

// plainAnswer is a 200 whose body is the request's path; a HEAD answer
// says the length of that body and has none.
func plainAnswer(method, path string) string {
	a := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(path)) + "\r\n\r\n"
	if method == "HEAD" {
		return a
	}
	return a + path
}
