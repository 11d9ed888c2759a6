package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// run executes the command line in-process and returns its exit code and
// outputs.
func run(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, Streams{In: strings.NewReader(""), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	valid := writeFile(t, dir, "valid.yaml", `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001}
routes:
  - {prefix: /api/users, service: users}
`)
	invalid := writeFile(t, dir, "invalid.yaml", `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001, timeout: soon}
routes:
  - {prefix: /api/users, service: user}
  - {prefix: /api/users, service: users}
colour: blue
`)
	flagged := func(name, flagsFile string) string {
		return writeFile(t, dir, name, `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001}
identity: [{header: X-User-ID}]
flags_file: `+flagsFile+`
routes:
  - {prefix: /api/users, service: users, flag: users-migration}
  - {prefix: /api/orders, service: users, flag: orders-migration}
`)
	}
	writeFile(t, dir, "flags.yaml", "flags:\n  users-migration: {percentage: 25}\n")
	writeFile(t, dir, "bad-flags.yaml", "flags:\n  users-migration: {percentage: 150}\n")
	withFlags := flagged("with-flags.yaml", "flags.yaml")
	withBadFlags := flagged("with-bad-flags.yaml", "bad-flags.yaml")
	withoutFlags := flagged("without-flags.yaml", "nope-flags.yaml")
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{"valid", []string{"validate", "--config", valid}, 0, []string{"valid (1 services, 1 routes)"}, nil},
		{"example file", []string{"validate", "-c", "../../examples/strangler.yaml"}, 0, []string{"valid (2 services, 2 routes)"}, nil},
		{"every problem with its line", []string{"validate", "--config", invalid}, 1, nil, []string{
			"4 problems",
			"line 3: services.users.timeout: invalid duration \"soon\"",
			"line 5: routes[0].service: \"user\" is not defined under services",
			"line 6: routes[1].prefix: \"/api/users\" is also the prefix of routes[0] (line 5)",
			"line 7: colour: unknown key",
		}},
		{"missing file", []string{"validate", "--config", filepath.Join(dir, "nope.yaml")}, 1, nil, []string{"no such file"}},
		{"flags file checked too", []string{"validate", "--config", withFlags}, 0, []string{
			"flags.yaml: valid (1 flags)",
			`warning: routes[1].flag: "orders-migration" is not in`,
		}, nil},
		{"invalid flags file", []string{"validate", "--config", withBadFlags}, 1, nil, []string{"line 2: flags.users-migration.percentage: 150 is out of range"}},
		{"flags file not there yet", []string{"validate", "--config", withoutFlags}, 0, []string{"does not exist yet"}, nil},
		{"unknown flag", []string{"validate", "--confg", valid}, 2, nil, []string{"unknown flag: --confg"}},
		{"stray argument", []string{"validate", "extra"}, 2, nil, []string{"takes no arguments"}},
		{"bad log level", []string{"serve", "--config", valid, "--log-level", "loud"}, 2, nil, []string{"--log-level"}},
		{"help has examples", []string{"serve", "--help"}, 0, []string{"Examples:", "strangler-proxy serve --config strangler.yaml"}, nil},
		{"help names both reloads", []string{"serve", "--help"}, 0, []string{"SIGHUP, or any change of the configuration file", "The flags file (flags_file) is polled too"}, nil},
		{"rollout commands are there", []string{"rollout", "--help"}, 0, []string{"set", "enable"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := run(t, c.args...)
			if code != c.wantCode {
				t.Fatalf("exit code: got %d, want %d (stdout %q, stderr %q)", code, c.wantCode, out, errOut)
			}
			for _, w := range c.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q: want it to contain %q", out, w)
				}
			}
			for _, w := range c.wantErr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q: want it to contain %q", errOut, w)
				}
			}
		})
	}
}

// TestValidateChecksIdentitySecrets pins that validate fails, like serve,
// when a JWT source's secret variable is unset or empty or its key file is
// missing: DESIGN.md makes that a config error.
func TestValidateChecksIdentitySecrets(t *testing.T) {
	dir := t.TempDir()
	config := func(name, jwt string) string {
		return writeFile(t, dir, name, `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001}
identity:
  - header: X-User-ID
  - jwt: `+jwt+`
routes:
  - {prefix: /api/users, service: users}
`)
	}
	hs256 := config("hs256.yaml", "{header: Authorization, claim: sub, hs256_secret_env: STRANGLER_TEST_JWT_SECRET}")
	rs256 := config("rs256.yaml", "{rs256_public_key_file: nope.pem}")
	cases := []struct {
		name     string
		config   string
		secret   string
		wantCode int
		wantErr  string
	}{
		{"secret set", hs256, "s3cret", 0, ""},
		{"secret empty", hs256, "", 1, "identity[1].jwt.hs256_secret_env: environment variable STRANGLER_TEST_JWT_SECRET is empty or not set"},
		{"key file missing", rs256, "", 1, "identity[1].jwt.rs256_public_key_file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("STRANGLER_TEST_JWT_SECRET", c.secret)
			code, out, errOut := run(t, "validate", "--config", c.config)
			if code != c.wantCode {
				t.Fatalf("exit code: got %d, want %d (stdout %q, stderr %q)", code, c.wantCode, out, errOut)
			}
			if !strings.Contains(errOut, c.wantErr) {
				t.Errorf("stderr %q: want it to contain %q", errOut, c.wantErr)
			}
		})
	}
}

// buildBinary compiles strangler-proxy into a temporary folder.
func buildBinary(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "strangler-proxy")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// waitHTTP polls url until it answers 200 or the deadline passes.
func waitHTTP(tb testing.TB, url string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not answer 200: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGTERMDrainsInFlightRequests runs the real binary, sends SIGTERM while
// slow requests are in flight, and checks that they complete and the process
// exits 0.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	const inflight = 5
	arrived := make(chan struct{}, inflight)
	release := make(chan struct{})
	mono := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "done")
	}))
	defer mono.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	listen, adminListen := testkit.FreeAddr(t), testkit.FreeAddr(t)
	cfg := writeFile(t, t.TempDir(), "strangler.yaml", fmt.Sprintf(`listen: %s
shutdown_timeout: 20s
admin: {listen: %s}
monolith: {url: %s}
`, listen, adminListen, mono.URL))
	proc := startProcess(t, bin, "serve", "--config", cfg)
	cmd, exited, stdout, stderr := proc.cmd, proc.exited, &proc.stdout, &proc.stderr
	waitHTTP(t, "http://"+adminListen+"/healthz")

	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, inflight)
	for i := 0; i < inflight; i++ {
		go func() {
			resp, err := http.Get("http://" + listen + "/slow")
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results <- result{status: resp.StatusCode, body: string(b), err: err}
		}()
	}
	for i := 0; i < inflight; i++ {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d slow requests reached the monolith", i, inflight)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The listener closes: new connections are refused while the slow
	// requests are still in flight.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the proxy still accepts connections after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-exited:
		t.Fatalf("the proxy exited (%v) before its requests finished", err)
	default:
	}
	close(release)

	for i := 0; i < inflight; i++ {
		r := <-results
		if r.err != nil || r.status != http.StatusOK || r.body != "done" {
			t.Errorf("in-flight request: got %d %q %v, want 200 \"done\"", r.status, r.body, r.err)
		}
	}
	select {
	case err := <-exited:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) || err != nil {
			t.Fatalf("exit: got %v, want exit code 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after its requests finished")
	}
	if got := strings.Count(stdout.String(), `"path":"/slow"`); got != inflight {
		t.Errorf("access log lines for /slow: got %d, want %d\n%s", got, inflight, stdout.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a strangler-proxy started by a test.
type process struct {
	cmd            *exec.Cmd
	exited         chan error
	stdout, stderr lockedBuffer
}

// startProcess starts the binary and kills it when the test ends, if it
// is still running.
func startProcess(tb testing.TB, bin string, args ...string) *process {
	tb.Helper()
	p := &process{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	tb.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// body GETs url and returns the answer's body, or the error text.
func body(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSIGHUPReloads runs the real binary with file watching off: SIGHUP
// applies a valid new file and rejects an invalid one, keeping the old.
func TestSIGHUPReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	mono := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "monolith") }))
	defer mono.Close()
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "users") }))
	defer svc.Close()
	listen, adminListen := testkit.FreeAddr(t), testkit.FreeAddr(t)
	base := fmt.Sprintf("listen: %s\nadmin: {listen: %s}\nmonolith: {url: %s}\nservices: {users: {url: %s}}\n", listen, adminListen, mono.URL, svc.URL)
	cfg := writeFile(t, t.TempDir(), "strangler.yaml", base)
	proc := startProcess(t, bin, "serve", "--config", cfg, "--watch", "0")
	waitHTTP(t, "http://"+adminListen+"/healthz")

	steps := []struct {
		name, content, want, wantMetric string
	}{
		{"valid file", base + "routes: [{prefix: /api/users, service: users}]\n", "users", `strangler_config_reloads_total{result="success"} 1`},
		{"invalid file keeps the old one", base + "routes: [{prefix: /api/users, service: nobody}]\n", "users", `strangler_config_reloads_total{result="failure"} 1`},
	}
	for _, s := range steps {
		writeFile(t, filepath.Dir(cfg), "strangler.yaml", s.content)
		if err := proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(body("http://"+adminListen+"/metrics"), s.wantMetric) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: metrics never showed %s\nstderr:\n%s", s.name, s.wantMetric, proc.stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := body("http://" + listen + "/api/users/1"); got != s.want {
			t.Errorf("%s: got served by %q, want %q", s.name, got, s.want)
		}
	}
	if !strings.Contains(proc.stderr.String(), `routes[0].service`) {
		t.Errorf("stderr: want the rejected file's problem logged, got:\n%s", proc.stderr.String())
	}
}

func TestExplain(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "strangler.yaml", `monolith: {url: http://127.0.0.1:8000}
services: {users: {url: http://127.0.0.1:8001}}
identity: [{header: X-User-ID}]
flags_file: flags.yaml
routes:
  - {prefix: /api/users, service: users, flag: users-migration, methods: [GET]}
  - {prefix: /api/products, service: users}
`)
	writeFile(t, dir, "flags.yaml", "flags:\n  users-migration: {percentage: 100, exclude_users: [u-out]}\n")
	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"bucketed user", []string{"--user", "u-42", "GET", "/api/users/7"}, 0, "decision: service (split:"},
		{"user from a header", []string{"--header", "X-User-ID=u-out", "GET", "/api/users"}, 0, "decision: monolith (excluded:"},
		{"anonymous", []string{"GET", "/api/users"}, 0, "user:     none"},
		{"method not routed", []string{"POST", "/api/users"}, 0, "decision: monolith (POST is not in the route's methods)"},
		{"no flag", []string{"get", "/api/products/1"}, 0, "decision: service (the route has no flag)"},
		{"no route", []string{"GET", "/home"}, 0, "decision: monolith (no route matches)"},
		{"bad header", []string{"--header", "nope", "GET", "/"}, 2, ""},
		{"missing path", []string{"GET"}, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"explain", "--config", cfg}, c.args...)...)
			if code != c.wantCode || !strings.Contains(out, c.want) {
				t.Errorf("got exit %d, output %q (stderr %q), want exit %d containing %q", code, out, errOut, c.wantCode, c.want)
			}
		})
	}
}

// TestExplainShowsGuardAndRamp checks that explain shows a flag's guard and
// ramp, and a trip recorded in the ramp's shared state with its reason.
func TestExplainShowsGuardAndRamp(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "strangler.yaml", `monolith: {url: http://127.0.0.1:8000}
services: {users: {url: http://127.0.0.1:8001}}
identity: [{header: X-User-ID}]
flags_file: flags.yaml
routes:
  - {prefix: /api/users, service: users, flag: users-migration}
`)
	writeFile(t, dir, "flags.yaml", `flags:
  users-migration:
    percentage: 0
    guard: {window: 60s, min_requests: 50, max_error_rate: 0.02}
    ramp: {steps: [1, 5, 25], interval: 10m}
`)
	writeFile(t, dir, "flags.yaml.ramp.json", `{"flags": {"users-migration": {"stopped": true,
  "stopped_reason": "error rate 0.5 > 0.02 over 1m0s (80 requests)", "stopped_at": "2026-01-02T03:04:05Z"}}}`)
	code, out, errOut := run(t, "explain", "--config", cfg, "--user", "u-1", "GET", "/api/users")
	for _, want := range []string{
		"guard:    window 1m0s, min 50 requests, max error rate 0.02",
		"ramp:     steps [1 5 25] every 10m0s",
		"state:    ramp stopped at 2026-01-02T03:04:05Z: error rate 0.5 > 0.02 over 1m0s (80 requests)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("got exit %d, output %q (stderr %q), want exit 0 containing %q", code, out, errOut, want)
		}
	}
}

// TestExplainInFleetModeSaysItDoesNotEvaluate: with flags_store the flags
// in force are in PostgreSQL; explain says so instead of claiming that
// there is no flags file.
func TestExplainInFleetModeSaysItDoesNotEvaluate(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "strangler.yaml", `monolith: {url: http://127.0.0.1:8000}
services: {users: {url: http://127.0.0.1:8001}}
flags_store: "${FLAGS_DB}"
routes:
  - {prefix: /api/users, service: users, flag: users-migration}
`)
	code, out, errOut := run(t, "explain", "--config", cfg, "GET", "/api/users")
	if code != 0 || !strings.Contains(out, "not evaluated (the flags are in flags_store") {
		t.Errorf("got exit %d, output %q (stderr %q)", code, out, errOut)
	}
}

// TestGCPercent pins that serve sets its own GOGC only when the environment
// sets none.
func TestGCPercent(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	if p, ok := gcPercent(env("")); !ok || p != defaultGCPercent {
		t.Errorf("GOGC unset: got %d, %v; want %d, true", p, ok, defaultGCPercent)
	}
	for _, v := range []string{"100", "off"} {
		if _, ok := gcPercent(env(v)); ok {
			t.Errorf("GOGC=%s: got a percent to set, want the environment's kept", v)
		}
	}
}

// A wrong number of arguments or an unknown command is a usage error (exit
// 2) that names the command and where its help is, on every level of the
// command tree; a group command without arguments prints its help.
func TestArgumentMistakesAreUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout", "set", "users-migration"}, "accepts 2 arg(s), received 1 (see strangler-proxy rollout set --help)"},
		{[]string{"rollout", "get", "a", "b"}, "(see strangler-proxy rollout get --help)"},
		{[]string{"rollout", "enable"}, "(see strangler-proxy rollout enable --help)"},
		{[]string{"rollout", "promote", "x"}, `unknown command "promote" for "strangler-proxy rollout"`},
		{[]string{"flags", "promote"}, `unknown command "promote" for "strangler-proxy flags"`},
		{[]string{"serv"}, `unknown command "serv" for "strangler-proxy"`},
	} {
		code, _, stderr := run(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: got exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
	code, stdout, _ := run(t, "rollout")
	if code != exitOK || !strings.Contains(stdout, "strangler-proxy rollout [command]") {
		t.Errorf("rollout without arguments: got exit %d, stdout %q; want its help and exit 0", code, stdout)
	}
}
