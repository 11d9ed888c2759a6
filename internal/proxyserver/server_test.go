package proxyserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// namedServer answers every request with X-Served-By: name; /api/slow
// reports its arrival on arrived (when not nil) and waits for release first.
func namedServer(tb testing.TB, name string, release <-chan struct{}, arrived chan<- struct{}) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/slow" {
			if arrived != nil {
				arrived <- struct{}{}
			}
			<-release
		}
		w.Header().Set("X-Served-By", name)
		fmt.Fprint(w, name)
	}))
	tb.Cleanup(s.Close)
	return s
}

func writeConfig(tb testing.TB, path, content string) {
	tb.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func config(mono, svc string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0}
monolith: {url: %s}
services:
  a: {url: %s}
routes:
  - {prefix: /api, service: a}
`, mono, svc)
}

// TestReloadUnderLoad reloads valid and invalid configurations, through file
// changes and reload requests, while clients send requests: none may fail,
// an invalid file must leave the configuration in force, and a request in
// flight during a reload finishes on the configuration it started with.
func TestReloadUnderLoad(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	arrived := make(chan struct{}, 1)
	mono := namedServer(t, "monolith", release, nil)
	svcA := namedServer(t, "a", release, arrived)
	svcB := namedServer(t, "b", release, nil)

	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeConfig(t, path, config(mono.URL, svcA.URL))
	reg := prometheus.NewRegistry()
	srv, err := New(Options{
		ConfigPath:   path,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:     reg,
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, reload) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	}()
	addr, _, err := srv.Addrs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	get := func(path string) (string, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return string(b), err
	}
	failures := func(result string) float64 {
		return testutil.ToFloat64(srv.reloads.WithLabelValues(result))
	}

	// A slow request, started on the first configuration.
	slow := make(chan string, 1)
	go func() {
		b, err := get("/api/slow")
		if err != nil {
			b = err.Error()
		}
		slow <- b
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach service a")
	}

	// Clients hammering the proxy for the whole test.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if _, err := get("/api/x"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}

	steps := []struct {
		name        string
		apply       func()
		wantServed  string
		wantSuccess float64
		wantFailure float64
	}{
		{"valid file change", func() { writeConfig(t, path, config(mono.URL, svcB.URL)) }, "b", 1, 0},
		{"invalid file change", func() { writeConfig(t, path, config(mono.URL, svcA.URL)+"routes: nope\n") }, "b", 1, 1},
		{"reload request with the file still invalid", func() { reload <- struct{}{} }, "b", 1, 2},
		{"valid again", func() { writeConfig(t, path, config(mono.URL, svcA.URL)) }, "a", 2, 2},
	}
	for _, s := range steps {
		s.apply()
		testkit.Eventually(t, 10*time.Second, s.name+": reload counted", func() bool {
			return failures("success") == s.wantSuccess && failures("failure") == s.wantFailure
		})
		if got, err := get("/api/x"); err != nil || got != s.wantServed {
			t.Errorf("%s: got served by %q (%v), want %q", s.name, got, err, s.wantServed)
		}
	}
	close(stop)
	wg.Wait()
	releaseAll()
	if got := <-slow; got != "a" {
		t.Errorf("request in flight across reloads: got served by %q, want a (the configuration it started with)", got)
	}
	if failed.Load() != 0 {
		t.Errorf("failed requests during reloads: got %d of %d, want 0 (first: %v)", failed.Load(), sent.Load(), firstErr.Load())
	}
	if sent.Load() < 10 {
		t.Errorf("requests sent during reloads: got %d, want at least 10", sent.Load())
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeConfig(t, path, "monolith: {url: nowhere}\n")
	_, err := New(Options{ConfigPath: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		t.Fatal("New: got no error, want the config's problems")
	}
	if want := "line 1: monolith.url"; !strings.Contains(err.Error(), want) {
		t.Errorf("New: got %q, want it to mention %q", err, want)
	}
}
