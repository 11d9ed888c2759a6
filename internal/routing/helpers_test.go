package routing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/h1serve"
	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/testkit"
)

// backend is a real HTTP server that counts what it receives and answers
// with X-Served-By: its name.
type backend struct {
	*httptest.Server
	name   string
	hits   atomic.Int64 // every request but health checks
	writes atomic.Int64 // requests with unsafe methods
	mu     sync.Mutex
	last   *http.Request
	body   []byte
}

// newBackend starts a backend; h may be nil for "200, served by name".
func newBackend(tb testing.TB, name string, h http.HandlerFunc) *backend {
	tb.Helper()
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		body, _ := io.ReadAll(r.Body)
		b.hits.Add(1)
		if !isSafe(r.Method) {
			b.writes.Add(1)
		}
		b.mu.Lock()
		b.last, b.body = r.Clone(r.Context()), body
		b.mu.Unlock()
		w.Header().Set("X-Served-By", name)
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s", name, r.Method, r.URL.RequestURI())
	}))
	tb.Cleanup(b.Close)
	return b
}

// lastRequest returns the last request the backend received and its body.
func (b *backend) lastRequest() (*http.Request, []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, b.body
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(tb testing.TB) string {
	tb.Helper()
	return "http://" + testkit.FreeAddr(tb)
}

// testProxy is a Proxy served by a real HTTP server: h1serve's, as
// strangler-proxy serves it, so that every test here also runs through the
// fast path (and, for requests it hands off, net/http's server).
type testProxy struct {
	*Proxy
	srv *testServer
	reg *prometheus.Registry
	log *lockedWriter
}

// newTestProxy parses the YAML configuration and serves it; with changes
// to the default Options.
func newTestProxy(tb testing.TB, yamlCfg string, with ...func(*Options)) *testProxy {
	tb.Helper()
	cfg := mustConfig(tb, yamlCfg)
	reg := prometheus.NewRegistry()
	logBuf := &lockedWriter{w: new(bytes.Buffer)}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := Options{
		Logger:    logger,
		AccessLog: slog.New(slog.NewJSONHandler(logBuf, nil)),
		Registry:  reg,
	}
	for _, w := range with {
		w(&opts)
	}
	p, err := New(cfg, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tp := &testProxy{Proxy: p, srv: newTestServer(tb, p), reg: reg, log: logBuf}
	tb.Cleanup(func() {
		tp.srv.Close()
		p.Close()
	})
	return tp
}

// testServer serves a handler with h1serve on a loopback listener.
type testServer struct {
	URL    string
	s      *h1serve.Server
	client *http.Client
	done   chan struct{}
}

func newTestServer(tb testing.TB, h http.Handler) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ts := &testServer{
		URL:    "http://" + ln.Addr().String(),
		s:      &h1serve.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute},
		client: &http.Client{Transport: &http.Transport{}},
		done:   make(chan struct{}),
	}
	go func() {
		defer close(ts.done)
		ts.s.Serve(ln)
	}()
	return ts
}

// Client returns a client for the server, like httptest.Server's.
func (ts *testServer) Client() *http.Client { return ts.client }

// Close stops the server and its client's idle connections.
func (ts *testServer) Close() {
	ts.client.CloseIdleConnections()
	ts.s.Close()
	<-ts.done
}

func mustConfig(tb testing.TB, yamlCfg string) *proxyconfig.Config {
	tb.Helper()
	cfg, err := proxyconfig.Parse(strings.NewReader(yamlCfg), tb.TempDir())
	if err != nil {
		tb.Fatalf("config: %v\n%s", err, yamlCfg)
	}
	return cfg
}

// lockedWriter collects the access log; the proxy writes a request's line
// after the client has its answer, so tests poll it.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// lines polls until the access log has n lines, and returns them.
func (l *lockedWriter) lines(tb testing.TB, n int) []string {
	tb.Helper()
	testkit.Eventually(tb, 5*time.Second, fmt.Sprintf("%d access log lines", n), func() bool {
		return strings.Count(l.String(), "\n") >= n
	})
	return strings.Split(strings.TrimSpace(l.String()), "\n")
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// answer is what a client saw.
type answer struct {
	status   int
	servedBy string
	body     string
}

// do sends a request through the proxy.
func (tp *testProxy) do(tb testing.TB, method, path, body string, header http.Header) answer {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, tp.srv.URL+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := tp.srv.Client().Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, servedBy: resp.Header.Get("X-Served-By"), body: string(b)}
}

// fallbacks reads strangler_fallbacks_total for a route and reason.
func (tp *testProxy) fallbacks(route, reason string) float64 {
	return testutil.ToFloat64(tp.metrics.fallbacks.WithLabelValues(route, reason))
}

// httptestServer starts a plain test server and returns its URL.
func httptestServer(tb testing.TB, h http.HandlerFunc) string {
	tb.Helper()
	s := httptest.NewServer(h)
	tb.Cleanup(s.Close)
	return s.URL
}

func contextWithCancel(tb testing.TB) (context.Context, context.CancelFunc) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return ctx, cancel
}
