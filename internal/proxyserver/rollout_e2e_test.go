package proxyserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	e2eSecret = "jwt-secret-for-tests"
	e2eToken  = "s3cret"
)

// rolloutConfig is a proxy in front of mono with three flagged routes on
// the service svc: /api/users (users-migration), /api/staff (staff) and
// /api/vip (vip). Identity: a verified HS256 JWT in Authorization, else
// X-User-ID.
func rolloutConfig(mono, svc string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0, token_env: ADMIN_TOKEN}
monolith: {url: %s}
services:
  users: {url: %s, timeout: 5s}
identity:
  - jwt: {header: Authorization, claim: sub, hs256_secret_env: JWT_SECRET}
  - header: X-User-ID
flags_file: flags.yaml
routes:
  - {prefix: /api/users, service: users, flag: users-migration}
  - {prefix: /api/staff, service: users, flag: staff}
  - {prefix: /api/vip, service: users, flag: vip}
`, mono, svc)
}

const rolloutFlags = `segments:
  employees: {claim: email, suffix: "@example.com"}
flags:
  users-migration: {percentage: 30}
  staff: {percentage: 0, segments: [employees], segment_percentages: {employees: 100}}
  vip: {percentage: 0, include_users: [u-vip]}
`

var e2eEnv = map[string]string{"ADMIN_TOKEN": e2eToken, "JWT_SECRET": e2eSecret}

// rolloutFixture is a running proxy with flags, its backends and files.
type rolloutFixture struct {
	dir                string
	cfgPath            string
	proxyURL, adminURL string
	stop               func()
}

// startRollout writes the config and flags files into a new folder and
// starts a proxy on them.
func startRollout(tb testing.TB, flags string) *rolloutFixture {
	tb.Helper()
	mono := namedServer(tb, "monolith", nil, nil)
	svc := namedServer(tb, "user-service", nil, nil)
	f := &rolloutFixture{dir: tb.TempDir()}
	f.cfgPath = filepath.Join(f.dir, "strangler.yaml")
	writeConfig(tb, f.cfgPath, rolloutConfig(mono.URL, svc.URL))
	writeConfig(tb, filepath.Join(f.dir, "flags.yaml"), flags)
	f.start(tb)
	return f
}

// start runs a new Server on the fixture's files; stop ends it.
func (f *rolloutFixture) start(tb testing.TB) {
	tb.Helper()
	srv, err := New(Options{
		ConfigPath:   f.cfgPath,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Getenv:       func(k string) string { return e2eEnv[k] },
		PollInterval: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, nil) }()
	var stopped bool
	f.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	tb.Cleanup(f.stop)
	p, a, err := srv.Addrs(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	f.proxyURL, f.adminURL = "http://"+p.String(), "http://"+a.String()
}

// servedBy sends GET path as the given user (X-User-ID, when not empty)
// with extra headers, and returns the X-Served-By answer.
func servedBy(tb testing.TB, url, user string, header http.Header) string {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if user != "" {
		req.Header.Set("X-User-ID", user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s as %q: got status %d, want 200", url, user, resp.StatusCode)
	}
	return resp.Header.Get("X-Served-By")
}

// adminDo sends an admin request with the token (when not empty) and
// returns the status and body.
func adminDo(tb testing.TB, method, url, token, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
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

func setFlag(tb testing.TB, adminURL, flag, body string) {
	tb.Helper()
	if code, resp := adminDo(tb, http.MethodPut, adminURL+"/admin/flags/"+flag, e2eToken, body); code != http.StatusOK {
		tb.Fatalf("PUT flag %s %s: got %d %s, want 200", flag, body, code, resp)
	}
}

// cohort returns the users among n that the proxy sends to the service.
func cohort(tb testing.TB, proxyURL string, n int) map[string]bool {
	tb.Helper()
	in := make(map[string]bool)
	for i := range n {
		u := fmt.Sprintf("user-%d", i)
		if servedBy(tb, proxyURL+"/api/users", u, nil) == "user-service" {
			in[u] = true
		}
	}
	return in
}

// TestRolloutEndToEnd drives one proxy with a flags file through the
// operator's day: a sticky 30 % split, a raise to 60 % that keeps the
// cohort, the kill switch, and a restart that keeps the percentage.
func TestRolloutEndToEnd(t *testing.T) {
	const users = 2000
	f := startRollout(t, rolloutFlags)

	at30 := cohort(t, f.proxyURL, users)
	if got := float64(len(at30)) * 100 / users; got < 27 || got > 33 {
		t.Errorf("at 30 %%: got %.1f %% of %d users on the service, want 30 ± 3", got, users)
	}

	t.Run("one user, one backend", func(t *testing.T) {
		for _, u := range []string{"user-1", "user-2", "user-3"} {
			first := servedBy(t, f.proxyURL+"/api/users", u, nil)
			for i := range 20 {
				if got := servedBy(t, f.proxyURL+"/api/users", u, nil); got != first {
					t.Fatalf("%s request %d: got %s, want %s like the first", u, i, got, first)
				}
			}
		}
	})

	setFlag(t, f.adminURL, "users-migration", `{"percentage": 60}`)
	at60 := cohort(t, f.proxyURL, users)
	for u := range at30 {
		if !at60[u] {
			t.Errorf("30 → 60 %%: %s left the service, want every user of the 30 %% cohort kept", u)
		}
	}
	if got := float64(len(at60)) * 100 / users; got < 57 || got > 63 {
		t.Errorf("at 60 %%: got %.1f %% on the service, want 60 ± 3", got)
	}

	code, metrics := adminDo(t, http.MethodGet, f.adminURL+"/metrics", "", "")
	for _, want := range []string{
		`strangler_rollout_percentage{flag="users-migration"} 60`,
		`strangler_rollout_decisions_total{backend="service",flag="users-migration"`,
		`strangler_rollout_decisions_total{backend="monolith",flag="users-migration"`,
	} {
		if code != http.StatusOK || !strings.Contains(metrics, want) {
			t.Errorf("/metrics: got %d without %q, want it listed", code, want)
		}
	}

	setFlag(t, f.adminURL, "users-migration", `{"enabled": false}`)
	if got := cohort(t, f.proxyURL, 200); len(got) != 0 {
		t.Errorf("disabled: got %d of 200 users on the service, want 0", len(got))
	}
	setFlag(t, f.adminURL, "users-migration", `{"enabled": true}`)

	f.stop()
	f.start(t)
	code, body := adminDo(t, http.MethodGet, f.adminURL+"/admin/flags/users-migration", "", "")
	if code != http.StatusOK || !strings.Contains(body, `"percentage": 60`) {
		t.Errorf("after restart: got %d %s, want percentage 60", code, body)
	}
	after := cohort(t, f.proxyURL, users)
	if len(after) != len(at60) {
		t.Errorf("after restart: got %d users on the service, want the %d of before", len(after), len(at60))
	}
}

func signJWT(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestRolloutIdentityAndSegments checks that only a verified token names a
// user and that a segment's own percentage sends exactly its members.
func TestRolloutIdentityAndSegments(t *testing.T) {
	f := startRollout(t, rolloutFlags)
	future := time.Now().Add(time.Hour).Unix()
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	cases := []struct {
		name   string
		path   string
		header http.Header
		want   string
	}{
		{"valid token of an included user", "/api/vip",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "u-vip", "exp": future})), "user-service"},
		{"token signed with another key", "/api/vip",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte("not-the-secret"), jwt.MapClaims{"sub": "u-vip", "exp": future})), "monolith"},
		{"alg none", "/api/vip",
			bearer(signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u-vip", "exp": future})), "monolith"},
		{"expired token", "/api/vip",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "u-vip", "exp": time.Now().Add(-time.Minute).Unix()})), "monolith"},
		{"employee", "/api/staff",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "e-1", "email": "ann@example.com", "exp": future})), "user-service"},
		{"another employee", "/api/staff",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "e-2", "email": "bob@example.com", "exp": future})), "user-service"},
		{"customer", "/api/staff",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "c-1", "email": "cy@example.org", "exp": future})), "monolith"},
		{"lookalike domain", "/api/staff",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte(e2eSecret), jwt.MapClaims{"sub": "c-2", "email": "dee@example.com.evil", "exp": future})), "monolith"},
		{"forged employee token", "/api/staff",
			bearer(signJWT(t, jwt.SigningMethodHS256, []byte("forger"), jwt.MapClaims{"sub": "e-3", "email": "eve@example.com", "exp": future})), "monolith"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := servedBy(t, f.proxyURL+c.path, "", c.header); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
	// Plain users of the staff route: none of them is an employee.
	for i := range 200 {
		if got := servedBy(t, f.proxyURL+"/api/staff", fmt.Sprintf("user-%d", i), nil); got != "monolith" {
			t.Fatalf("staff route, user-%d without a token: got %s, want monolith", i, got)
		}
	}
	_, metrics := adminDo(t, http.MethodGet, f.adminURL+"/metrics", "", "")
	// Two tokens signed with another key, one with alg none, one expired;
	// the other reasons are exported at 0.
	for _, want := range []string{
		`strangler_identity_jwt_failures_total{reason="bad_signature"} 2` + "\n",
		`strangler_identity_jwt_failures_total{reason="wrong_alg"} 1` + "\n",
		`strangler_identity_jwt_failures_total{reason="expired"} 1` + "\n",
		`strangler_identity_jwt_failures_total{reason="not_yet_valid"} 0` + "\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics: got no %q, want forged and expired tokens counted and other reasons at 0", strings.TrimSpace(want))
		}
	}
}

// TestRolloutAdminWritesNeedTheToken checks that flag changes without the
// token, or with a wrong one, are refused and change nothing.
func TestRolloutAdminWritesNeedTheToken(t *testing.T) {
	f := startRollout(t, rolloutFlags)
	cases := []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "guess", http.StatusForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := adminDo(t, http.MethodPut, f.adminURL+"/admin/flags/users-migration", c.token, `{"percentage": 100}`)
			if code != c.want {
				t.Errorf("got %d %s, want %d", code, body, c.want)
			}
		})
	}
	data, err := os.ReadFile(filepath.Join(f.dir, "flags.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != rolloutFlags {
		t.Errorf("flags file after refused writes: got %q, want it unchanged", data)
	}
	_, body := adminDo(t, http.MethodGet, f.adminURL+"/admin/flags/users-migration", "", "")
	if !strings.Contains(body, `"percentage": 30`) {
		t.Errorf("flag after refused writes: got %s, want percentage 30", body)
	}
}
