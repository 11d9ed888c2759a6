package routing

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// faultyBody is a request whose body is the client's fault, as raw bytes.
type faultyBody struct {
	name string
	raw  string
	// hangUp closes the connection after raw instead of only its sending
	// half: the client is gone and gets no answer.
	hangUp bool
	want   int // the answer, when the client is still there
}

// faultyBodies are the bodies of issue 16, finding 2, for a POST to path.
func faultyBodies(path string, extra string) []faultyBody {
	head := "POST " + path + " HTTP/1.1\r\nHost: shop.example\r\n" + extra
	return []faultyBody{
		{"bad chunk size", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false, 400},
		{"chunked body cut short", head + "Transfer-Encoding: chunked\r\n\r\n10\r\nhello", false, 400},
		{"Content-Length 100, 10 bytes sent", head + "Content-Length: 100\r\n\r\n0123456789", false, 400},
		{"Content-Length 100, 10 bytes sent, client hangs up", head + "Content-Length: 100\r\n\r\n0123456789", true, 0},
	}
}

// sendFaulty sends a faulty body and returns the answer, if the client
// stayed for one.
func sendFaulty(tb testing.TB, addr string, f faultyBody) rawAnswer {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, f.raw); err != nil {
		tb.Fatal(err)
	}
	if f.hangUp {
		return rawAnswer{}
	}
	// The client has sent all it will: the proxy reads the end of the
	// stream where the rest of the body should be.
	c.(*net.TCPConn).CloseWrite()
	return readRawAnswer(bufio.NewReader(c), "POST")
}

// TestClientBodyFaultIsNotAServiceFailure pins issue 16, finding 2: a POST
// to a service route whose body was malformed or cut short was counted as a
// failure of the service and answered 502, so that any client could open
// the service's breaker (5 such requests opened a breaker set to 5
// failures) and trip its rollout guard. The client's fault is answered 400
// (nothing when it is gone) and counts against nothing: no breaker failure,
// no fallback, no Observer call (the guard's feed).
func TestClientBodyFaultIsNotAServiceFailure(t *testing.T) {
	for _, replayable := range []bool{false, true} {
		t.Run(fmt.Sprintf("replayable=%t", replayable), func(t *testing.T) {
			mono := newRawBackend(t, nil)
			svc := newRawBackend(t, nil)
			rec := &recorder{}
			tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, breaker: {consecutive_failures: 5, open_for: 1h}}
routes: [{prefix: /api/users, service: users}]
`, mono.URL(), svc.URL()), func(o *Options) { o.Observer = rec })
			extra := ""
			if replayable {
				// Buffered for a replay before anything is sent.
				extra = "Idempotency-Key: k1\r\n"
			}
			n := 0
			for round := range 3 {
				for _, f := range faultyBodies("/api/users", extra) {
					n++
					got := sendFaulty(t, tp.addr(), f)
					if !f.hangUp && (got.err != nil || got.status != f.want) {
						t.Fatalf("round %d, %s: got %d %q (%v), want %d", round, f.name, got.status, got.body, got.err, f.want)
					}
				}
			}
			// Every one of them answered (or given up on) and counted.
			testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d refused requests counted", n), func() bool {
				var c float64
				for _, code := range []string{"400", "499"} {
					c += testutil.ToFloat64(tp.metrics.requests.WithLabelValues("/api/users", "monolith", code))
				}
				return c == float64(n)
			})
			if got := tp.Status().Services[0].Breaker; got != "closed" {
				t.Errorf("breaker after %d faulty bodies: got %s, want closed", n, got)
			}
			for _, reason := range []string{"connect_error", "timeout", "status_5xx", "breaker_open"} {
				if got := tp.fallbacks("/api/users", reason); got != 0 {
					t.Errorf("fallbacks{reason=%s}: got %v, want 0", reason, got)
				}
			}
			if got := rec.len(); got != 0 {
				t.Errorf("Observer calls: got %d, want 0 (%+v)", got, rec.results)
			}
			if got := svc.requests(); len(got) != 0 {
				t.Errorf("service received complete requests %q, want none", got)
			}
			if got := mono.received(); got != "" {
				t.Errorf("monolith received %q, want nothing", got)
			}
			if replayable {
				if got := svc.received(); got != "" {
					t.Errorf("service received %q, want nothing: a buffered body is read whole before sending", got)
				}
			}
			// The service still takes requests.
			ok := sendRaw(t, tp.addr(), "POST", "POST /api/users HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2\r\n\r\nok")
			if ok.status != 200 || ok.body != "POST /api/users" {
				t.Errorf("a good POST after them: got %d %q, want 200 from the service", ok.status, ok.body)
			}
		})
	}
}

// TestMalformedChunkedBodyIs400 pins the "Status codes" item of issue 16: a
// malformed chunked request body was answered 502, as if the upstream had
// failed; it is the client's error, 400, on a route and off one.
func TestMalformedChunkedBodyIs400(t *testing.T) {
	mono := newRawBackend(t, nil)
	svc := newRawBackend(t, nil)
	tp := newTestProxy(t, h1Config(mono.URL(), svc.URL()))
	for _, path := range []string{"/api/users", "/orders"} {
		f := faultyBodies(path, "")[0]
		if got := sendFaulty(t, tp.addr(), f); got.status != 400 {
			t.Errorf("%s: got %d (%v), want 400", path, got.status, got.err)
		}
	}
	if got := append(mono.requests(), svc.requests()...); len(got) != 0 {
		t.Errorf("upstreams received complete requests %q, want none", got)
	}
}

// TestMaxBody pins the max_body limit of issue 16: a body above a route's
// max_body is answered 413, before anything is sent upstream when its
// Content-Length says so, and by aborting the upstream request when a
// chunked body passes the limit on its way; neither counts against the
// service.
func TestMaxBody(t *testing.T) {
	mono := newRawBackend(t, nil)
	svc := newRawBackend(t, nil)
	rec := &recorder{}
	tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
max_body: 2KiB
services:
  users: {url: %s, breaker: {consecutive_failures: 1, open_for: 1h}}
routes:
  - {prefix: /api/users, service: users, max_body: 1KiB}
  - {prefix: /api/uploads, service: users, max_body: 0}
`, mono.URL(), svc.URL()), func(o *Options) { o.Observer = rec })

	chunked := func(path string, sizes ...int) string {
		var b strings.Builder
		b.WriteString("POST " + path + " HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, n := range sizes {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, strings.Repeat("a", n))
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	withLength := func(method, path string, n int, send bool) string {
		s := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: shop.example\r\nContent-Length: %d\r\n\r\n", method, path, n)
		if send {
			s += strings.Repeat("a", n)
		}
		return s
	}
	cases := []struct {
		name, method, raw string
		want              int
		reaches           string // the complete request an upstream gets, if any
	}{
		{"Content-Length at the limit", "POST", withLength("POST", "/api/users/1", 1024, true), 200, "POST /api/users/1"},
		{"Content-Length above it, body not sent", "POST", withLength("POST", "/api/users/2", 1025, false), 413, ""},
		{"Content-Length above it on a GET", "GET", withLength("GET", "/api/users/3", 8<<20, false), 413, ""},
		{"chunked at the limit", "POST", chunked("/api/users/4", 600, 424), 200, "POST /api/users/4"},
		{"chunked above it", "POST", chunked("/api/users/5", 600, 600, 600), 413, ""},
		{"unrouted: the top-level max_body", "POST", withLength("POST", "/orders/1", 2049, false), 413, ""},
		{"unrouted, chunked", "POST", chunked("/orders/2", 1500, 1500), 413, ""},
		{"max_body 0: no limit", "POST", chunked("/api/uploads/1", 3000, 3000), 200, "POST /api/uploads/1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(svc.requests()) + len(mono.requests())
			got := sendRaw(t, tp.addr(), c.method, c.raw)
			if got.status != c.want {
				t.Fatalf("got %d (%v), want %d", got.status, got.err, c.want)
			}
			reached := append(svc.requests(), mono.requests()...)
			switch {
			case c.reaches == "" && len(reached) != before:
				t.Errorf("upstreams received %q, want nothing new", reached[before:])
			case c.reaches != "" && (len(reached) != before+1 || !strings.Contains(strings.Join(reached, ","), c.reaches)):
				t.Errorf("upstreams received %q, want %q once more", reached, c.reaches)
			}
		})
	}
	if got := tp.Status().Services[0].Breaker; got != "closed" {
		t.Errorf("breaker (1 failure opens it): got %s, want closed", got)
	}
	testkit.Eventually(t, 5*time.Second, "the successful requests observed", func() bool { return rec.len() >= 3 })
	for _, res := range rec.results {
		if res.Status != 200 || res.Failure != ReasonNone {
			t.Errorf("Observer saw %+v, want only the 200s", res)
		}
	}
	// Nothing above the limit was ever sent in full.
	for _, b := range svc.bodies {
		if len(b) > 1024 && len(b) != 6000 {
			t.Errorf("service got a body of %d bytes", len(b))
		}
	}
}

// TestBodyErrorStatus pins the answer to each kind of body read failure.
func TestBodyErrorStatus(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"cut short", io.ErrUnexpectedEOF, 400},
		{"malformed", errors.New("invalid byte in chunk length"), 400},
		{"read timeout", fmt.Errorf("read body: %w", os.ErrDeadlineExceeded), 408},
	}
	for _, c := range cases {
		if got := bodyErrorStatus(c.err); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
}
