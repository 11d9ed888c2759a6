package statuspage_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/proxyserver"
	"github.com/strangler-fig/strangler/internal/testkit"
)

const token = "page-token"

// proxy is a running strangler-proxy with one flagged route, /api/users,
// in front of two real HTTP servers.
type proxy struct {
	dir                string
	proxyURL, adminURL string
}

func startProxy(tb testing.TB, flags string) *proxy {
	tb.Helper()
	named := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", name)
			if strings.HasSuffix(r.URL.Path, "/fail") && name == "user-service" {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			fmt.Fprintf(w, `{"served_by": %q}`, name)
		}))
		tb.Cleanup(s.Close)
		return s
	}
	mono, svc := named("monolith"), named("user-service")
	p := &proxy{dir: tb.TempDir()}
	config := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0, token_env: ADMIN_TOKEN}
monolith: {url: %s}
services:
  users: {url: %s, timeout: 5s, breaker: {consecutive_failures: 1000, open_for: 30s}}
identity:
  - header: X-User-ID
flags_file: flags.yaml
routes:
  - {prefix: /api/users, service: users, flag: users-migration}
`, mono.URL, svc.URL)
	for name, text := range map[string]string{"strangler.yaml": config, "flags.yaml": flags} {
		if err := os.WriteFile(filepath.Join(p.dir, name), []byte(text), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	srv, err := proxyserver.New(proxyserver.Options{
		ConfigPath:   filepath.Join(p.dir, "strangler.yaml"),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Getenv:       func(k string) string { return map[string]string{"ADMIN_TOKEN": token}[k] },
		PollInterval: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, nil) }()
	tb.Cleanup(func() { cancel(); <-done })
	pa, aa, err := srv.Addrs(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	p.proxyURL, p.adminURL = "http://"+pa.String(), "http://"+aa.String()
	return p
}

// traffic sends n GETs of path through the proxy as users 1..n.
func (p *proxy) traffic(tb testing.TB, path string, n int) {
	tb.Helper()
	for i := 1; i <= n; i++ {
		req, _ := http.NewRequest(http.MethodGet, p.proxyURL+path, nil)
		req.Header.Set("X-User-ID", fmt.Sprint(i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var (
	tags   = regexp.MustCompile(`<[^>]*>`)
	spaces = regexp.MustCompile(`\s+`)
)

// rowText returns the text of the table row with the given id in an HTML
// page, tags removed and white space folded: what a reader sees of it.
func rowText(tb testing.TB, page, id string) string {
	tb.Helper()
	start := strings.Index(page, `<tr id="`+id+`"`)
	if start < 0 {
		tb.Fatalf("no row %q in the page:\n%s", id, page)
	}
	end := strings.Index(page[start:], "</tr>")
	if end < 0 {
		tb.Fatalf("row %q is not closed", id)
	}
	text := tags.ReplaceAllString(page[start:start+end], " ")
	text = strings.NewReplacer("&amp;", "&", "&#43;", "+", "&lt;", "<", "&gt;", ">").Replace(text)
	return strings.TrimSpace(spaces.ReplaceAllString(text, " "))
}

func TestPageShowsRoutesFlagsAndRates(t *testing.T) {
	p := startProxy(t, "flags:\n  users-migration: {percentage: 50, guard: {window: 1h, min_requests: 1000, max_error_rate: 0.5}}\n")
	// The first view has no earlier sample: totals, not rates.
	code, page := get(t, p.adminURL+"/")
	if code != http.StatusOK {
		t.Fatalf("GET /: got %d, want 200:\n%s", code, page)
	}
	if !strings.Contains(page, "since the start") {
		t.Errorf("the first view should say its figures run since the start:\n%s", page)
	}
	p.traffic(t, "/api/users/1", 40)
	p.traffic(t, "/api/users/fail", 20)
	time.Sleep(1100 * time.Millisecond) // the page compares samples at least 1s apart
	_, page = get(t, p.adminURL+"/")

	row := rowText(t, page, "route-/api/users")
	for _, want := range []string{"/api/users users all users-migration 50%", "/s", "closed", "healthy (no health check)"} {
		if !strings.Contains(row, want) {
			t.Errorf("route row %q lacks %q", row, want)
		}
	}
	// Users whose bucket is under 50 % went to the service; on /fail the
	// service answered 502 and the GETs fell back to the monolith.
	if !regexp.MustCompile(`status_5xx \d+\.\d\d/s`).MatchString(row) {
		t.Errorf("route row %q lacks the status_5xx fallback rate", row)
	}
	flag := rowText(t, page, "flag-users-migration")
	for _, want := range []string{"users-migration yes 50%", "holding", "no ramp"} {
		if !strings.Contains(flag, want) {
			t.Errorf("flag row %q lacks %q", flag, want)
		}
	}
	if !strings.Contains(page, "One replica") {
		t.Errorf("without fleet mode the page should say it is one replica")
	}
}

func TestPageWritesNeedTheToken(t *testing.T) {
	p := startProxy(t, "flags:\n  users-migration: {percentage: 50}\n")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(form url.Values) (int, string) {
		resp, err := noRedirect.PostForm(p.adminURL+"/ui/flags/users-migration", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location") + string(body)
	}
	for _, c := range []struct {
		name string
		form url.Values
		code int
	}{
		{"no token", url.Values{"action": {"set"}, "percentage": {"10"}}, http.StatusUnauthorized},
		{"wrong token", url.Values{"action": {"set"}, "percentage": {"10"}, "token": {"nope"}}, http.StatusForbidden},
		{"bad percentage", url.Values{"action": {"set"}, "percentage": {"ten"}, "token": {token}}, http.StatusBadRequest},
		{"out of range", url.Values{"action": {"set"}, "percentage": {"101"}, "token": {token}}, http.StatusBadRequest},
		{"unknown action", url.Values{"action": {"drop"}, "token": {token}}, http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code, body := post(c.form); code != c.code {
				t.Errorf("got %d (%s), want %d", code, body, c.code)
			}
		})
	}
	if _, body := get(t, p.adminURL+"/admin/flags/users-migration"); !regexp.MustCompile(`"percentage":\s*50\b`).MatchString(body) {
		t.Fatalf("refused writes changed the flag: %s", body)
	}

	code, loc := post(url.Values{"action": {"set"}, "percentage": {"12.5"}, "token": {token}})
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/?notice=") {
		t.Fatalf("set with the token: got %d %q, want 303 to /?notice=", code, loc)
	}
	if _, body := get(t, p.adminURL+"/admin/flags/users-migration"); !regexp.MustCompile(`"percentage":\s*12.5\b`).MatchString(body) {
		t.Errorf("after the form's write the flag is %s, want percentage 12.5", body)
	}
	flags, err := os.ReadFile(filepath.Join(p.dir, "flags.yaml"))
	if err != nil || !strings.Contains(string(flags), "12.5") {
		t.Errorf("the form's write was not persisted to the flags file: %s %v", flags, err)
	}
	_, page := get(t, p.adminURL+loc)
	if !strings.Contains(page, "users-migration set to 12.5%") {
		t.Errorf("the page after the write does not say what was done:\n%s", page)
	}
	if strings.Contains(page, token) {
		t.Errorf("the page shows the token")
	}

	if code, _ := post(url.Values{"action": {"disable"}, "token": {token}}); code != http.StatusSeeOther {
		t.Fatalf("disable: got %d, want 303", code)
	}
	_, page = get(t, p.adminURL+"/")
	if row := rowText(t, page, "route-/api/users"); !strings.Contains(row, "0% (disabled)") {
		t.Errorf("after disable the route row is %q, want 0%% (disabled)", row)
	}
	testkit.Eventually(t, 5*time.Second, "the kill switch in force", func() bool {
		req, _ := http.NewRequest(http.MethodGet, p.proxyURL+"/api/users/1", nil)
		req.Header.Set("X-User-ID", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("X-Served-By") == "monolith"
	})
}

// chromium finds a Chromium to drive; "" when none is installed.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	return ""
}

// browse runs headless Chromium on url with extra flags and returns what it
// printed.
func browse(tb testing.TB, browser, url string, flags ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + tb.TempDir()}, flags...)
	cmd := exec.CommandContext(ctx, browser, append(args, url)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", browser, strings.Join(flags, " "), err, errOut.String())
	}
	return out.String()
}

// TestPageInBrowser loads the page in a real browser (headless Chromium,
// which scripts/ensure-ops-tools.sh installs for make test) against a
// running proxy and checks the rendered text of the route's row. With
// STATUS_PAGE_SCREENSHOT=FILE it also saves a screenshot there
// (scripts/status-page-screenshot.sh makes the one in docs/proxy.md).
func TestPageInBrowser(t *testing.T) {
	browser := chromium()
	if browser == "" {
		t.Skip("Chromium is not installed and could not be (scripts/ensure-ops-tools.sh installs Debian's chromium package): the browser test is skipped")
	}
	p := startProxy(t, "flags:\n  users-migration: {percentage: 50, guard: {window: 1h, min_requests: 1000, max_error_rate: 0.5}, ramp: {steps: [50, 100], interval: 24h}}\n")
	get(t, p.adminURL+"/")
	p.traffic(t, "/api/users/1", 60)
	p.traffic(t, "/api/users/fail", 10)
	time.Sleep(1100 * time.Millisecond)

	dom := browse(t, browser, p.adminURL+"/", "--dump-dom")
	row := rowText(t, dom, "route-/api/users")
	for _, want := range []string{"/api/users users all users-migration 50%", "closed", "healthy (no health check)"} {
		if !strings.Contains(row, want) {
			t.Errorf("the route row as the browser rendered it, %q, lacks %q", row, want)
		}
	}
	if flag := rowText(t, dom, "flag-users-migration"); !strings.Contains(flag, "users-migration yes 50%") {
		t.Errorf("the flag row as the browser rendered it, %q, lacks the percentage", flag)
	}

	if shot := os.Getenv("STATUS_PAGE_SCREENSHOT"); shot != "" {
		abs, err := filepath.Abs(shot)
		if err != nil {
			t.Fatal(err)
		}
		browse(t, browser, p.adminURL+"/", "--screenshot="+abs, "--window-size=1400,900", "--hide-scrollbars")
		if st, err := os.Stat(abs); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", abs, err)
		}
	}
}
