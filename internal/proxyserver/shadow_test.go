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

	dir := t.TempDir()
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
    shadow: {percentage: 100, ignore_headers: [Content-Type]}
`, mono.URL, svc.URL)
	path := filepath.Join(dir, "strangler.yaml")
	writeConfig(t, path, cfg)
	writeConfig(t, filepath.Join(dir, "flags.yaml"), "flags:\n  products-migration: {percentage: 0}\n")
	_, proxyURL, adminURL := startServerAt(t, path, e2eEnv)

	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL+path, nil)
		req.Header.Set("X-User-ID", "u-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if got := resp.Header.Get("X-Served-By"); got != "monolith" {
			t.Errorf("GET %s: got an answer from %s, want the monolith's", path, got)
		}
		return string(b)
	}
	// counted returns strangler_shadow_comparisons_total for a result.
	counted := func(result string) string {
		_, m := adminDo(t, http.MethodGet, adminURL+"/metrics", "", "")
		prefix := fmt.Sprintf(`strangler_shadow_comparisons_total{result=%q,route="products"} `, result)
		for line := range strings.SplitSeq(m, "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				return v
			}
		}
		return "0"
	}
	waitCount := func(result, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for counted(result) != want {
			if time.Now().After(deadline) {
				t.Fatalf("strangler_shadow_comparisons_total{result=%q}: got %s at the deadline, want %s", result, counted(result), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

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
