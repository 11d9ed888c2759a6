package proxyserver

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestShadowThroughTheProxy sends monolith-bound requests of a shadowed
// route through a real proxy: the client always gets the monolith's
// answer, copies reach the service in the background, and the comparisons
// are counted and listed.
func TestShadowThroughTheProxy(t *testing.T) {
	mono := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", "monolith")
		io.WriteString(w, `{"id": 7, "name": "lamp", "price": 12.50, "tags": ["a", "b"]}`)
	}))
	t.Cleanup(mono.Close)
	release := make(chan struct{})
	hung := make(chan struct{}, 1)
	var posts atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", "product-service")
		switch r.URL.Path {
		case "/api/products/order":
			io.WriteString(w, `{"tags": ["a", "b"], "price": 12.5, "name": "lamp", "id": 7}`)
		case "/api/products/differs":
			io.WriteString(w, `{"id": 7, "title": "lamp", "price": 12.5, "tags": ["a", "b"]}`)
		case "/api/products/hang":
			hung <- struct{}{}
			<-release
		default:
			io.WriteString(w, `{"id": 7, "name": "lamp", "price": 12.50, "tags": ["a", "b"]}`)
		}
	}))
	t.Cleanup(svc.Close)
	// Closed before the service (cleanups run last in, first out), so the
	// hanging handler returns.
	t.Cleanup(func() { close(release) })

	proxyURL, adminURL := startShadowed(t, mono.URL, svc.URL, "{percentage: 100, ignore_headers: [Content-Type]}")

	get := func(path string) string { return shadowGet(t, proxyURL, path) }
	waitCount := func(result, want string) { waitShadowCount(t, adminURL, result, want) }

	t.Run("a hanging service adds nothing to the answer", func(t *testing.T) {
		// The answer arrives while the service's handler is still blocked:
		// release is only closed when the test ends.
		if got := get("/api/products/hang"); !strings.Contains(got, `"lamp"`) {
			t.Errorf("got %q, want the monolith's body", got)
		}
		select {
		case <-hung:
		case <-time.After(10 * time.Second):
			t.Fatal("the shadow copy never reached the service")
		}
	})
	t.Run("key order and number format only: a match", func(t *testing.T) {
		get("/api/products/order")
		waitCount("match", "1")
	})
	t.Run("a differing field is reported with its path", func(t *testing.T) {
		get("/api/products/differs")
		waitCount("mismatch", "1")
		code, body := adminDo(t, http.MethodGet, adminURL+"/admin/shadow/mismatches?route=products", "", "")
		if code != http.StatusOK || !strings.Contains(body, `"$.name"`) || !strings.Contains(body, "/api/products/differs") {
			t.Errorf("mismatches: got %d %s, want the path $.name of /api/products/differs", code, body)
		}
	})
	t.Run("POSTs are never shadowed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, proxyURL+"/api/products", strings.NewReader(`{"name": "desk"}`))
		req.Header.Set("X-User-ID", "u-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// A GET after it is compared; a copy of the POST would have been
		// submitted before it.
		get("/api/products/1")
		waitCount("match", "2")
		if got := posts.Load(); got != 0 {
			t.Errorf("service got %d POSTs, want 0", got)
		}
	})
	t.Run("unknown route in the mismatch listing", func(t *testing.T) {
		if code, body := adminDo(t, http.MethodGet, adminURL+"/admin/shadow/mismatches?route=nope", "", ""); code != http.StatusNotFound {
			t.Errorf("got %d %s, want 404", code, body)
		}
	})
}

// startShadowed runs a proxy whose route "products" (/api/products, flag
// products-migration at 0 %, so every request goes to the monolith) has
// the shadow config given.
func startShadowed(tb testing.TB, monoURL, svcURL, shadowCfg string) (proxyURL, adminURL string) {
	tb.Helper()
	dir := tb.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0, token_env: ADMIN_TOKEN}
monolith: {url: %s}
services:
  products: {url: %s, timeout: 30s}
identity: [{header: X-User-ID}]
flags_file: flags.yaml
routes:
  - name: products
    prefix: /api/products
    service: products
    flag: products-migration
    shadow: %s
`, monoURL, svcURL, shadowCfg)
	path := filepath.Join(dir, "strangler.yaml")
	writeConfig(tb, path, cfg)
	writeConfig(tb, filepath.Join(dir, "flags.yaml"), "flags:\n  products-migration: {percentage: 0}\n")
	_, proxyURL, adminURL = startServerAt(tb, path, e2eEnv)
	return proxyURL, adminURL
}

// shadowGet sends GET path as a user and returns the body; the answer must
// be the monolith's.
func shadowGet(tb testing.TB, proxyURL, path string) string {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, proxyURL+path, nil)
	req.Header.Set("X-User-ID", "u-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if got := resp.Header.Get("X-Served-By"); got != "monolith" {
		tb.Errorf("GET %s: got an answer from %s, want the monolith's", path, got)
	}
	return string(b)
}

// shadowCount returns strangler_shadow_comparisons_total of route products
// for a result.
func shadowCount(tb testing.TB, adminURL, result string) string {
	tb.Helper()
	_, m := adminDo(tb, http.MethodGet, adminURL+"/metrics", "", "")
	prefix := fmt.Sprintf(`strangler_shadow_comparisons_total{result=%q,route="products"} `, result)
	for line := range strings.SplitSeq(m, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0"
}

// waitShadowCount polls until the count of result is want.
func waitShadowCount(tb testing.TB, adminURL, result, want string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for shadowCount(tb, adminURL, result) != want {
		if time.Now().After(deadline) {
			tb.Fatalf("strangler_shadow_comparisons_total{result=%q}: got %s at the deadline, want %s", result, shadowCount(tb, adminURL, result), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShadowNoiseCheck checks that a field that differs between two
// answers of the monolith itself (here a counter) is learned by the A/A
// check and then no longer makes a mismatch.
func TestShadowNoiseCheck(t *testing.T) {
	var n atomic.Int64
	mono := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "monolith")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": 7, "generated": %d}`, n.Add(1))
	}))
	t.Cleanup(mono.Close)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": 7, "generated": -1}`)
	}))
	t.Cleanup(svc.Close)
	proxyURL, adminURL := startShadowed(t, mono.URL, svc.URL, "{percentage: 100, noise_check: true}")

	// A tenth of the copies run the A/A check, at random: send requests
	// until one comparison matches, which only the learned noise allows.
	deadline := time.Now().Add(20 * time.Second)
	for shadowCount(t, adminURL, "match") == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("no match at the deadline (%s mismatches): the noise was not learned", shadowCount(t, adminURL, "mismatch"))
		}
		for range 10 {
			shadowGet(t, proxyURL, "/api/products/7")
		}
	}
	code, body := adminDo(t, http.MethodGet, adminURL+"/admin/shadow/mismatches?route=products", "", "")
	if code != http.StatusOK || !strings.Contains(body, "$.generated") {
		t.Errorf("mismatch listing: got %d %s, want $.generated among the learned noise", code, body)
	}
}
