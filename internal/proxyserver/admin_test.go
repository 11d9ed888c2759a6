package proxyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/testkit"
)

// startServer runs a Server on the configuration text until the test ends,
// and returns its proxy and admin base URLs.
func startServer(tb testing.TB, cfgText string, env map[string]string) (srv *Server, proxyURL, adminURL string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "strangler.yaml")
	writeConfig(tb, path, cfgText)
	return startServerAt(tb, path, env)
}

// startServerAt is startServer for a config file already written.
func startServerAt(tb testing.TB, path string, env map[string]string) (srv *Server, proxyURL, adminURL string) {
	tb.Helper()
	return runServer(tb, Options{ConfigPath: path, Getenv: func(k string) string { return env[k] }})
}

// runServer runs a server with opts (logs discarded, no file polling unless
// set) until the test ends, and returns it with its proxy and admin URLs.
func runServer(tb testing.TB, opts Options) (srv *Server, proxyURL, adminURL string) {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = -1
	}
	srv, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, nil) }()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	p, a, err := srv.Addrs(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return srv, "http://" + p.String(), "http://" + a.String()
}

func TestAdminEndpoints(t *testing.T) {
	mono := namedServer(t, "monolith", nil, nil)
	cfg := config(mono.URL, mono.URL) + "\nadmin: {listen: 127.0.0.1:0, token_env: ADMIN_TOKEN}\n"
	cfg = strings.Replace(cfg, "admin: {listen: 127.0.0.1:0}\n", "", 1)
	_, _, adminURL := startServer(t, cfg, map[string]string{"ADMIN_TOKEN": "s3cret"})
	cases := []struct {
		name, method, path, token string
		wantStatus                int
		wantBody                  string
	}{
		{"status", "GET", "/admin/", "", 200, `"prefix": "/api"`},
		{"readyz with the monolith up", "GET", "/readyz", "", 200, "ready"},
		{"metrics", "GET", "/metrics", "", 200, "strangler_config_reloads_total"},
		{"reload without token", "POST", "/admin/reload", "", 401, "missing bearer token"},
		{"reload with a wrong token", "POST", "/admin/reload", "nope", 403, "wrong bearer token"},
		{"reload with the token", "POST", "/admin/reload", "s3cret", 200, "reloaded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, adminURL+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.wantStatus || !strings.Contains(string(b), c.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, b, c.wantStatus, c.wantBody)
			}
		})
	}
}

func TestReadyzWithMonolithDown(t *testing.T) {
	down := "http://" + testkit.FreeAddr(t)
	_, _, adminURL := startServer(t, config(down, down), nil)
	resp, err := http.Get(adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body["error"], "monolith") {
		t.Errorf("got %d %v, want 503 naming the monolith", resp.StatusCode, body)
	}
}

// TestSlowClientCannotHoldAConnection pins server.read_header_timeout: a
// client that sends its headers too slowly is disconnected.
func TestSlowClientCannotHoldAConnection(t *testing.T) {
	mono := namedServer(t, "monolith", nil, nil)
	_, proxyURL, _ := startServer(t, "server: {read_header_timeout: 100ms}\n"+config(mono.URL, mono.URL), nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /api/x HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	// The server closes the connection (perhaps after a 408): ReadAll ends
	// at EOF. A timeout means the connection was still held.
	_, err = io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s: the proxy let a slow client hold it", time.Since(start))
	}
}

// TestOnConfigCanRejectAReload pins the OnConfig hook: it sees each valid
// configuration and its error keeps the old configuration in force.
func TestOnConfigCanRejectAReload(t *testing.T) {
	mono := namedServer(t, "monolith", nil, nil)
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeConfig(t, path, config(mono.URL, mono.URL))
	var seen []string
	srv, err := New(Options{
		ConfigPath:   path,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: -1,
		OnConfig: func(cfg *proxyconfig.Config) error {
			seen = append(seen, cfg.FlagsFile)
			if cfg.FlagsFile == "bad.yaml" {
				return fmt.Errorf("flags_file: bad.yaml is not a flags file")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		flags   string
		wantErr bool
	}{
		{"good.yaml", false},
		{"bad.yaml", true},
	}
	for _, c := range cases {
		t.Run(c.flags, func(t *testing.T) {
			writeConfig(t, path, config(mono.URL, mono.URL)+"flags_file: "+c.flags+"\n")
			err := srv.Reload()
			if (err != nil) != c.wantErr {
				t.Fatalf("Reload: got %v, want error %v", err, c.wantErr)
			}
			if got := srv.Proxy().Config().FlagsFile; got != "good.yaml" {
				t.Errorf("flags_file in force: got %q, want good.yaml", got)
			}
		})
	}
	if got := strings.Join(seen, ","); got != ",good.yaml,bad.yaml" {
		t.Errorf("OnConfig saw %q, want \",good.yaml,bad.yaml\"", got)
	}
}
