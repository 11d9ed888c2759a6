package proxyserver

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlaggedRoutes runs a proxy with a flags file: the flag sends users by
// their id, an anonymous request goes to the monolith, and the admin API
// changes the flag (with the token) with effect on the next request.
func TestFlaggedRoutes(t *testing.T) {
	mono := namedServer(t, "monolith", nil, nil)
	users := namedServer(t, "a", nil, nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.yaml"), []byte("flags:\n  users-migration: {enabled: true, percentage: 100}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(config(mono.URL, users.URL), "  - {prefix: /api, service: a}\n", "  - {prefix: /api, service: a, flag: users-migration}\n", 1)
	cfg = strings.Replace(cfg, "admin: {listen: 127.0.0.1:0}\n", "admin: {listen: 127.0.0.1:0, token_env: ADMIN_TOKEN}\n", 1)
	cfg += "identity: [{header: X-User-ID}]\nflags_file: flags.yaml\n"
	path := filepath.Join(dir, "strangler.yaml")
	writeConfig(t, path, cfg)
	_, proxyURL, adminURL := startServerAt(t, path, map[string]string{"ADMIN_TOKEN": "s3cret"})

	send := func(method, url, user, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if user != "" {
			req.Header.Set("X-User-ID", user)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	steps := []struct {
		name, method, url, user, token, body string
		wantStatus                           int
		wantBody                             string
	}{
		{"user at 100%", "GET", proxyURL + "/api/x", "u-1", "", "", 200, "a"},
		{"anonymous", "GET", proxyURL + "/api/x", "", "", "", 200, "monolith"},
		{"flag list", "GET", adminURL + "/admin/flags", "", "", "", 200, "users-migration"},
		{"change without token", "PUT", adminURL + "/admin/flags/users-migration", "", "", `{"percentage": 0}`, 401, "missing bearer token"},
		{"change with token", "PUT", adminURL + "/admin/flags/users-migration", "", "s3cret", `{"percentage": 0}`, 200, `"percentage"`},
		{"user at 0%", "GET", proxyURL + "/api/x", "u-1", "", "", 200, "monolith"},
		{"rollout metrics", "GET", adminURL + "/metrics", "", "", "", 200, "strangler_rollout_percentage"},
	}
	for _, s := range steps {
		code, body := send(s.method, s.url, s.user, s.token, s.body)
		if code != s.wantStatus || !strings.Contains(body, s.wantBody) {
			t.Errorf("%s: got %d %.200q, want %d containing %q", s.name, code, body, s.wantStatus, s.wantBody)
		}
	}
}
