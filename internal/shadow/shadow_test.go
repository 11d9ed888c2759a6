package shadow

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func mustURL(tb testing.TB, s string) *url.URL {
	tb.Helper()
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// jsonServer answers every request with body (a func of the request count)
// as JSON and records the requests it got.
type jsonServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newJSONServer(tb testing.TB, body func(n int) string) *jsonServer {
	tb.Helper()
	js := &jsonServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.mu.Lock()
		js.reqs = append(js.reqs, r.Clone(context.Background()))
		n := len(js.reqs)
		js.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body(n))
	}))
	tb.Cleanup(js.Close)
	return js
}

func (js *jsonServer) requests() []*http.Request {
	js.mu.Lock()
	defer js.mu.Unlock()
	return append([]*http.Request(nil), js.reqs...)
}

type fixture struct {
	s   *Shadower
	reg *prometheus.Registry
}

func newFixture(tb testing.TB, opts Options, routes ...Route) *fixture {
	tb.Helper()
	f := &fixture{reg: prometheus.NewRegistry()}
	opts.Registerer = f.reg
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	s.Configure(routes)
	f.s = s
	return f
}

func (f *fixture) results(route, result string) float64 {
	return testutil.ToFloat64(f.s.results.WithLabelValues(route, result))
}

// captureKey carries a request's Capture from Rewrite to ModifyResponse.
type captureKey struct{}

// newProxy is a reverse proxy that sends everything to the monolith and
// shadows route's requests, wired the way strangler-proxy wires a
// Shadower.
func newProxy(tb testing.TB, s *Shadower, route string, monolith *url.URL) *httptest.Server {
	tb.Helper()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(monolith)
			if c := s.Begin(route, pr.In); c != nil {
				pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), captureKey{}, c))
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if c, ok := resp.Request.Context().Value(captureKey{}).(*Capture); ok {
				c.WrapResponse(resp)
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	tb.Cleanup(srv.Close)
	return srv
}

func get(tb testing.TB, method, u string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

const productJSON = `{"id": 1, "name": "Lamp", "price_cents": 1999, "tags": ["home", "light"]}`

func TestHangingServiceDoesNotDelayTheClient(t *testing.T) {
	monolith := newJSONServer(t, func(int) string { return productJSON })
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	service := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, productJSON)
	}))
	defer service.Close()
	defer close(release) // before service.Close, which waits for the handler
	f := newFixture(t, Options{MaxConcurrent: 1}, Route{
		Name: "products", Config: Config{Percentage: 100},
		Service: mustURL(t, service.URL), Monolith: mustURL(t, monolith.URL),
	})

	t.Run("Submit returns while the service hangs", func(t *testing.T) {
		ok := f.s.Submit("products", Request{Method: "GET", Path: "/api/products/1"}, jsonAnswer(productJSON))
		if !ok {
			t.Fatal("Submit: got false, want the copy started")
		}
		<-arrived // the copy reached the service, which now hangs; Submit has long returned
		if ok := f.s.Submit("products", Request{Method: "GET", Path: "/api/products/1"}, jsonAnswer(productJSON)); ok {
			t.Fatal("Submit with the only slot busy: got true, want the copy dropped")
		}
		if got := f.results("products", ResultDropped); got != 1 {
			t.Fatalf("got %v dropped, want 1", got)
		}
	})

	t.Run("the client gets the monolith's answer through the proxy", func(t *testing.T) {
		proxy := newProxy(t, f.s, "products", mustURL(t, monolith.URL))
		for i := range 3 {
			code, body := get(t, "GET", proxy.URL+"/api/products/1")
			if code != 200 || body != productJSON {
				t.Fatalf("request %d: got %d %q, want 200 and the monolith's body", i, code, body)
			}
		}
		proxy.Close() // waits for the proxy's handlers, so every copy was submitted
		if got := f.results("products", ResultDropped); got != 4 {
			t.Fatalf("got %v dropped, want 4 (1 before, 3 through the proxy)", got)
		}
	})

	release <- struct{}{}
	f.s.Wait()
	if got := f.results("products", ResultMatch); got != 1 {
		t.Fatalf("after the service answered: got %v matches, want 1", got)
	}
}

func TestComparisonsThroughTheService(t *testing.T) {
	service := newJSONServer(t, func(n int) string {
		if n == 1 { // same data, other key order and number format
			return `{"tags":["home","light"],"price_cents":1999.0,"name":"Lamp","id":1e0}`
		}
		return `{"id": 1, "title": "Lamp", "price_cents": 1999, "tags": ["home", "light"]}`
	})
	f := newFixture(t, Options{}, Route{
		Name: "products", Config: Config{Percentage: 100},
		Service: mustURL(t, service.URL), Monolith: mustURL(t, "http://127.0.0.1:1"),
		StripPrefix: "/api",
	})
	req := Request{Method: "GET", Path: "/api/products/1", RawQuery: "expand=tags",
		Header: http.Header{"Accept": {"application/json"}, "X-User-Id": {"u-1"}}}

	if !f.s.Submit("products", req, jsonAnswer(productJSON)) {
		t.Fatal("Submit: got false, want true")
	}
	f.s.Wait()
	if got := f.results("products", ResultMatch); got != 1 {
		t.Fatalf("key order and number format: got %v matches, want 1", got)
	}
	got := service.requests()[0]
	if got.URL.Path != "/products/1" || got.URL.RawQuery != "expand=tags" || got.Header.Get("X-User-Id") != "u-1" || got.Header.Get(ShadowHeader) != "true" {
		t.Fatalf("service got %s %s?%s with headers %v, want the stripped path, the query, the client's headers and %s",
			got.Method, got.URL.Path, got.URL.RawQuery, got.Header, ShadowHeader)
	}

	f.s.Submit("products", req, jsonAnswer(productJSON))
	f.s.Wait()
	if got := f.results("products", ResultMismatch); got != 1 {
		t.Fatalf("renamed field: got %v mismatches, want 1", got)
	}
	ms, _ := f.s.Mismatches("products")
	if len(ms) != 1 {
		t.Fatalf("got %d mismatches kept, want 1", len(ms))
	}
	want := []string{`$.name: "Lamp" | (absent)`, `$.title: (absent) | "Lamp"`}
	if got := diffStrings(ms[0].Diffs); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got diffs %q, want %q", got, want)
	}
	if ms[0].Path != "/api/products/1" || ms[0].Method != "GET" || ms[0].MonolithStatus != 200 || ms[0].ServiceStatus != 200 {
		t.Fatalf("got mismatch %+v, want GET /api/products/1, 200 and 200", ms[0])
	}
}

func TestServiceErrorIsCounted(t *testing.T) {
	f := newFixture(t, Options{}, Route{
		Name: "products", Config: Config{Percentage: 100},
		Service: mustURL(t, "http://127.0.0.1:1"), Monolith: mustURL(t, "http://127.0.0.1:1"),
	})
	f.s.Submit("products", Request{Method: "GET", Path: "/"}, jsonAnswer(productJSON))
	f.s.Wait()
	if got := f.results("products", ResultError); got != 1 {
		t.Fatalf("got %v errors, want 1", got)
	}
}

func TestUnsafeMethodsAreNeverShadowed(t *testing.T) {
	monolith := newJSONServer(t, func(int) string { return `{"created": true}` })
	service := newJSONServer(t, func(int) string { return `{"created": true}` })
	f := newFixture(t, Options{}, Route{
		Name: "users", Config: Config{Percentage: 100},
		Service: mustURL(t, service.URL), Monolith: mustURL(t, monolith.URL),
	})
	proxy := newProxy(t, f.s, "users", mustURL(t, monolith.URL))
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			if code, _ := get(t, method, proxy.URL+"/api/users"); code != 200 {
				t.Fatalf("got %d, want 200 from the monolith", code)
			}
			if f.s.Sample("users", method) {
				t.Fatal("Sample: got true, want false")
			}
			if f.s.Submit("users", Request{Method: method, Path: "/api/users"}, jsonAnswer(`{}`)) {
				t.Fatal("Submit: got true, want false")
			}
		})
	}
	proxy.Close()
	f.s.Wait()
	if got := len(service.requests()); got != 0 {
		t.Fatalf("service got %d requests, want 0", got)
	}
	for _, res := range []string{ResultMatch, ResultMismatch, ResultError, ResultDropped} {
		if got := f.results("users", res); got != 0 {
			t.Errorf("comparisons with result %s: got %v, want 0", res, got)
		}
	}
}

// TestComparisonsCounterStartsAtZero pins that
// strangler_shadow_comparisons_total is exported for every shadowed route
// and result before the first comparison: a series that appears at 1 is
// missed by increase() and rate().
func TestComparisonsCounterStartsAtZero(t *testing.T) {
	f := newFixture(t, Options{}, Route{Name: "users", Config: Config{Percentage: 100}})
	const want = `
# HELP strangler_shadow_comparisons_total Shadow comparisons of the monolith's and the service's answers, per route and result (match, mismatch, error, dropped).
# TYPE strangler_shadow_comparisons_total counter
strangler_shadow_comparisons_total{result="dropped",route="users"} 0
strangler_shadow_comparisons_total{result="error",route="users"} 0
strangler_shadow_comparisons_total{result="match",route="users"} 0
strangler_shadow_comparisons_total{result="mismatch",route="users"} 0
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "strangler_shadow_comparisons_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNoisyFieldsLearnedByTheAACheckAreIgnored(t *testing.T) {
	var generated atomic.Int64
	monolith := newJSONServer(t, func(int) string {
		return fmt.Sprintf(`{"id": 1, "name": "Lamp", "generated_at": %d, "items": [{"sku": "a", "rev": %d}]}`,
			generated.Add(1), generated.Load())
	})
	var serviceName atomic.Value
	serviceName.Store("Lamp")
	service := newJSONServer(t, func(int) string {
		return fmt.Sprintf(`{"id": 1, "name": %q, "generated_at": 0, "items": [{"sku": "a", "rev": -1}]}`, serviceName.Load())
	})
	results := make(chan string, 10)
	f := newFixture(t, Options{NoiseSample: 1, Rand: func() float64 { return 0 },
		OnResult: func(_, result string) { results <- result }}, Route{
		Name: "products", Config: Config{Percentage: 100, NoiseCheck: true},
		Service: mustURL(t, service.URL), Monolith: mustURL(t, monolith.URL),
	})
	proxy := newProxy(t, f.s, "products", mustURL(t, monolith.URL))
	// round makes one request through the proxy and waits for its
	// comparison: the copy is submitted when the proxy closes the
	// monolith's body, which may come after the client has its answer.
	round := func() string {
		t.Helper()
		get(t, "GET", proxy.URL+"/api/products/1")
		return <-results
	}

	// First A/A check: generated_at and rev seen once, still reported.
	if got := round(); got != ResultMismatch {
		t.Fatalf("before the noise is learned: got %s, want %s", got, ResultMismatch)
	}
	ms, _ := f.s.Mismatches("products")
	if got, want := diffPaths(ms[0].Diffs), "$.generated_at $.items[0].rev"; got != want {
		t.Fatalf("got diffs at %s, want at %s", got, want)
	}

	// Second A/A check: both are noise now.
	if got := round(); got != ResultMatch {
		t.Fatalf("after the noise is learned: got %s, want %s", got, ResultMatch)
	}
	noise, _ := f.s.Noise("products")
	if got, want := strings.Join(noise.Noisy, " "), "$.generated_at $.items[*].rev"; got != want {
		t.Fatalf("got noisy paths %q, want %q", got, want)
	}
	if noise.Checks != 2 {
		t.Fatalf("got %d A/A checks, want 2", noise.Checks)
	}

	serviceName.Store("Desk lamp") // a real difference is still reported
	if got := round(); got != ResultMismatch {
		t.Fatalf("with a renamed product: got %s, want %s", got, ResultMismatch)
	}
	ms, _ = f.s.Mismatches("products")
	if got, want := diffPaths(ms[0].Diffs), "$.name"; got != want {
		t.Fatalf("got diffs at %s, want at %s", got, want)
	}
}

func diffPaths(ds []Diff) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Path)
	}
	return strings.Join(out, " ")
}

func TestLargeMonolithBodyIsDropped(t *testing.T) {
	big := `{"blob": "` + strings.Repeat("x", 100) + `"}`
	monolith := newJSONServer(t, func(int) string { return big })
	service := newJSONServer(t, func(int) string { return big })
	f := newFixture(t, Options{MaxBody: 64}, Route{
		Name: "products", Config: Config{Percentage: 100},
		Service: mustURL(t, service.URL), Monolith: mustURL(t, monolith.URL),
	})
	proxy := newProxy(t, f.s, "products", mustURL(t, monolith.URL))
	if _, body := get(t, "GET", proxy.URL+"/x"); body != big {
		t.Fatalf("got body %q, want the monolith's whole body", body)
	}
	proxy.Close()
	f.s.Wait()
	if got := f.results("products", ResultDropped); got != 1 {
		t.Fatalf("got %v dropped, want 1", got)
	}
	if got := len(service.requests()); got != 0 {
		t.Fatalf("service got %d requests, want 0", got)
	}
}

func TestSample(t *testing.T) {
	for _, tc := range []struct {
		name       string
		percentage float64
		roll       float64
		method     string
		route      string
		want       bool
	}{
		{name: "inside the percentage", percentage: 50, roll: 0.3, method: "GET", route: "r", want: true},
		{name: "outside the percentage", percentage: 25, roll: 0.3, method: "GET", route: "r", want: false},
		{name: "100 always", percentage: 100, roll: 0.9999, method: "HEAD", route: "r", want: true},
		{name: "0 never", percentage: 0, roll: 0, method: "GET", route: "r", want: false},
		{name: "OPTIONS is safe", percentage: 100, roll: 0, method: "OPTIONS", route: "r", want: true},
		{name: "POST never", percentage: 100, roll: 0, method: "POST", route: "r", want: false},
		{name: "unknown route", percentage: 100, roll: 0, method: "GET", route: "other", want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{Rand: func() float64 { return tc.roll }}, Route{
				Name: "r", Config: Config{Percentage: tc.percentage},
				Service: mustURL(t, "http://127.0.0.1:1"), Monolith: mustURL(t, "http://127.0.0.1:1"),
			})
			if got := f.s.Sample(tc.route, tc.method); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func BenchmarkTeeBody(b *testing.B) {
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Configure([]Route{{Name: "r", Config: Config{Percentage: 100},
		Service: mustURL(b, "http://127.0.0.1:1"), Monolith: mustURL(b, "http://127.0.0.1:1")}})
	body := strings.Repeat(`{"id": 1, "name": "Lamp"},`, 400) // 10 KB
	in := httptest.NewRequest("GET", "/api/products", nil)
	in.Header.Set("Accept", "application/json")
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		c := s.Begin("r", in)
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}},
			ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body))}
		c.WrapResponse(resp)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf); err != nil {
			b.Fatal(err)
		}
		// Not closed: the benchmark measures the tee, not the comparison.
	}
}

func BenchmarkCompareJSON(b *testing.B) {
	var items []string
	for i := range 100 {
		items = append(items, fmt.Sprintf(`{"id": %d, "name": "item %d", "price": %d.50, "updated_at": "2026-01-01T00:00:00Z"}`, i, i, i))
	}
	mono := jsonAnswer(`{"items": [` + strings.Join(items, ",") + `], "count": 100}`)
	svc := jsonAnswer(`{"count": 100.0, "items": [` + strings.Join(items, ",") + `]}`)
	ig := Config{IgnoreJSONPaths: []string{"$.items[*].updated_at"}}.ignores()
	b.SetBytes(int64(len(mono.Body)))
	b.ReportAllocs()
	for b.Loop() {
		if d := compareAnswers(mono, svc, ig, 1<<20); len(d) != 0 {
			b.Fatalf("got %v, want no differences", d)
		}
	}
}
