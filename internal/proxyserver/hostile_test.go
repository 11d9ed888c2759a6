package proxyserver

import (
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// hostileCase is raw bytes a client sends, and what strangler-proxy must
// make of them.
type hostileCase struct {
	name string
	raw  string
	// want is strangler-proxy's one answer; the connection must close
	// after it, and the backend must receive nothing.
	want int
	// smuggled, when set, must never reach the backend, through any of
	// the proxies.
	smuggled string
	// peers runs the case against nginx and HAProxy too: they must not
	// forward the smuggled request, or, without one, anything (their
	// answers are logged: HAProxy forwards a request with both framings
	// as chunked, then closes the connection).
	peers bool
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got.Reset()
}

const smuggledGet = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// teSmuggle is a POST whose body is empty by its chunked framing and 4
// bytes long by its Content-Length, followed by a second request: a
// proxy and a backend that frame it differently disagree on where the
// second request starts.
func teSmuggle(te string) string {
	return "POST /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n" + te + "\r\n\r\n0\r\n\r\n" + smuggledGet
}

func hostileCases() []hostileCase {
	manyHeaders := strings.Repeat("X-N: 1\r\n", 5000)
	bigLines := strings.Repeat("X-Big: "+strings.Repeat("b", 8000)+"\r\n", 96)
	return []hostileCase{
		// Issue 16, finding 3: the connection stayed open after a request
		// with both framings, and what followed was served.
		{name: "Transfer-Encoding and Content-Length", raw: teSmuggle("Transfer-Encoding: chunked"), want: 400, smuggled: "/smuggled", peers: true},
		{name: "Transfer-Encoding with two spaces", raw: teSmuggle("Transfer-Encoding:  chunked"), want: 400, smuggled: "/smuggled", peers: true},
		{name: "Transfer-Encoding chunked and a tab", raw: teSmuggle("Transfer-Encoding: chunked\t"), want: 400, smuggled: "/smuggled", peers: true},
		{name: "Transfer-Encoding CHUNKED", raw: teSmuggle("Transfer-Encoding: CHUNKED"), want: 400, smuggled: "/smuggled", peers: true},
		{name: "obs-folded Transfer-Encoding", raw: teSmuggle("Transfer-Encoding:\r\n chunked"), want: 400, smuggled: "/smuggled", peers: true},
		{name: "CHUNKED without Content-Length", raw: "POST /svc/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + smuggledGet, want: 400, smuggled: "/smuggled"},
		{name: "obs-fold in another header", raw: "GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", want: 400},
		{name: "two Content-Lengths", raw: "POST /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", want: 400},
		// Limits: each of these was forwarded.
		{name: "70 kB header value", raw: "GET /svc/a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("v", 70000) + "\r\n\r\n", want: 431, peers: true},
		{name: "5,000 headers", raw: "GET /svc/a HTTP/1.1\r\nHost: x\r\n" + manyHeaders + "\r\n", want: 431, peers: true},
		{name: "750 kB head", raw: "GET /svc/a HTTP/1.1\r\nHost: x\r\n" + bigLines + "\r\n", want: 431, peers: true},
		{name: "64 KiB URI", raw: "GET /svc/" + strings.Repeat("u", 64<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", want: 414, peers: true},
		// Request lines.
		{name: "HTTP/2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: 505, peers: true},
		{name: "userinfo in an absolute-form target", raw: "GET http://user:pw@x/svc/a HTTP/1.1\r\nHost: x\r\n\r\n", want: 400},
	}
}

// TestHostileInput pins issue 16's findings 3 and the limits and request
// lines it lists: each request is refused with the status given and the
// connection closed, and nothing reaches the backend; with and without the
// HTTP/1.1 fast path. Where nginx and HAProxy refuse the same input (cases
// marked peers), they run the same bytes in front of the same kind of
// backend, which must receive nothing from them either.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	cases := hostileCases()
	targets := []struct {
		name   string
		start  func(t *testing.T, rec *recorder) string
		strict bool // strangler-proxy: status and close checked
	}{
		{"strangler", func(t *testing.T, rec *recorder) string { return strangler(t, rec, "http1_fast_path: true") }, true},
		{"strangler without fast path", func(t *testing.T, rec *recorder) string { return strangler(t, rec, "http1_fast_path: false") }, true},
		{"nginx", func(t *testing.T, rec *recorder) string { return testkit.StartNginx(t, rec.addr, "") }, false},
		{"haproxy", func(t *testing.T, rec *recorder) string { return testkit.StartHAProxy(t, rec.addr, "") }, false},
	}
	for _, target := range targets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			addr := target.start(t, rec)
			for _, tc := range cases {
				if !target.strict && !tc.peers {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					rec.reset()
					statuses, closed := exchange(t, addr, tc.raw, true, 10*time.Second)
					if target.strict {
						if len(statuses) != 1 || statuses[0] != tc.want || !closed {
							t.Errorf("answers: got %v (closed: %t), want [%d] and the connection closed", statuses, closed, tc.want)
						}
					} else {
						t.Logf("%s answers %v (closed: %t)", target.name, statuses, closed)
					}
					switch got := rec.received(); {
					case tc.smuggled != "" && strings.Contains(got, tc.smuggled):
						t.Errorf("backend received the smuggled request: %.300q", got)
					case target.strict && got != "":
						t.Errorf("backend received %.200q, want nothing", got)
					case tc.smuggled == "" && got != "":
						t.Errorf("backend received %.200q, want nothing", got)
					}
				})
			}
		})
	}
}

// TestStalledBodyReleasesBackend pins issue 16's finding 4: a body that
// stops (Content-Length 10, then 2 bytes) held the client's connection and
// a backend connection for 70 s and more. With body_read_timeout set short
// here, the client gets 408 and is closed, and the backend holds no
// connection for the request; nginx (client_body_timeout) and HAProxy
// (timeout http-request, which covers the body it waits for) end such a
// connection too.
func TestStalledBodyReleasesBackend(t *testing.T) {
	t.Parallel()
	const raw = "POST /svc/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"
	for _, target := range []struct {
		name   string
		start  func(t *testing.T, rec *recorder) string
		strict bool
	}{
		{"strangler", func(t *testing.T, rec *recorder) string {
			return strangler(t, rec, "http1_fast_path: true, body_read_timeout: 300ms")
		}, true},
		{"strangler without fast path", func(t *testing.T, rec *recorder) string {
			return strangler(t, rec, "http1_fast_path: false, body_read_timeout: 300ms")
		}, true},
		{"nginx", func(t *testing.T, rec *recorder) string {
			return testkit.StartNginx(t, rec.addr, "client_body_timeout 300ms;")
		}, false},
		{"haproxy", func(t *testing.T, rec *recorder) string {
			return testkit.StartHAProxy(t, rec.addr, "option http-buffer-request\n  timeout http-request 300ms")
		}, false},
	} {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			addr := target.start(t, rec)
			statuses, closed := exchange(t, addr, raw, false, 10*time.Second)
			if !closed {
				t.Fatalf("the connection is still open after 10 s (answers %v)", statuses)
			}
			if target.strict {
				if len(statuses) != 1 || statuses[0] != 408 {
					t.Errorf("answers: got %v, want [408]", statuses)
				}
			} else {
				t.Logf("%s answers %v and closes", target.name, statuses)
			}
			t.Logf("backend received %q", rec.received())
			testkit.Eventually(t, 5*time.Second, "no backend connection left open", func() bool {
				return rec.openConns() == 0
			})
			if got := rec.received(); strings.Contains(got, "ab") && !strings.HasSuffix(got, "ab") {
				t.Errorf("backend received %q after the stalled body", got)
			}
		})
	}
}
