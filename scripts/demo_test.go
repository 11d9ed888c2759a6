// Package scripts holds the repository's shell scripts; its test runs the
// demo script end to end.
package scripts

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// TestDemo runs scripts/demo.sh on free ports and in folders of its own, so
// it never meets a demo someone is running: the way a smoke test does
// (DEMO_NONINTERACTIVE=1), twice, then the way a user does, stopped with
// Ctrl-C or killed, and checks that it sets everything up and leaves nothing
// behind.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo builds the apps and starts PostgreSQL")
	}
	bin := buildApps(t)
	ports := freePorts(t, 6)
	demoDir := filepath.Join(t.TempDir(), "demo")
	env := []string{
		"DEMO_NONINTERACTIVE=1",
		"DEMO_BIN=" + bin,
		"DEMO_DIR=" + demoDir,
		"DEMO_PG_PORT=" + ports[0],
		"DEMO_MONOLITH_PORT=" + ports[1],
		"DEMO_USERS_PORT=" + ports[2],
		"DEMO_PRODUCTS_PORT=" + ports[3],
		"DEMO_PROXY_PORT=" + ports[4],
		"DEMO_ADMIN_PORT=" + ports[5],
		"DEMO_SEED_USERS=50",
		"DEMO_SEED_PRODUCTS=10",
	}

	t.Run("runs and stops", func(t *testing.T) {
		out, err := runDemo(t, env)
		if err != nil {
			t.Fatalf("demo.sh: %v\n%s", err, out)
		}
		for _, want := range []string{
			"http://127.0.0.1:" + ports[1],
			"http://127.0.0.1:" + ports[2],
			"http://127.0.0.1:" + ports[3],
			"postgres://postgres@127.0.0.1:" + ports[0] + "/{monolith,users,products}",
			"curl -i 'http://127.0.0.1:" + ports[1] + "/api/users?limit=3'",
			"http://127.0.0.1:" + ports[4] + "/api/users/1 -H 'X-User-ID: 1'",
			"http://127.0.0.1:" + ports[5] + "/metrics",
			"0%: 0 of 200 users served by user-service",
			"users served by user-service",
			"the rollout is sticky per user",
			`strangler_rollout_decisions_total{backend="service",flag="users-migration",reason="split"}`,
			`strangler_requests_total{backend="service",code="200",route="/api/users"}`,
			"percentage:     50%",
			"decision:",
			`strangler_shadow_comparisons_total{result="match",route="/api/products"}`,
			`"path": "$.price_cents"`,
			"the two sides hand out ids from disjoint ranges",
			"every one of the 24 accounts is in both databases",
			"the guard tripped: users-migration is back to 0 %",
			"accounts created through the user-service are served, by the monolith",
			"datasync verify --two-way: users are consistent on both sides",
			"guard state:    tripped",
			`strangler_guard_trips_total{flag="users-migration"} 1`,
			"users-migration: resumed at 0%",
			"==> stopped",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "did not stop") {
			t.Errorf("an app had to be killed:\n%s", out)
		}
		for _, want := range []string{"10%: ", "50%: "} {
			if !strings.Contains(out, "==> "+want) {
				t.Errorf("output lacks the split at %q:\n%s", want, out)
			}
		}
		for _, app := range []string{"monolith", "user-service", "product-service"} {
			log, err := os.ReadFile(filepath.Join(demoDir, "logs", app+".log"))
			if err != nil || !bytes.Contains(log, []byte(`"msg":"shutting down"`)) {
				t.Errorf("%s log: got no graceful shutdown on SIGTERM (err %v):\n%s", app, err, log)
			}
		}
		if log, err := os.ReadFile(filepath.Join(demoDir, "logs", "proxy.log")); err != nil || !bytes.Contains(log, []byte(`"msg":"shut down cleanly"`)) {
			t.Errorf("proxy log: got no clean shutdown on SIGTERM (err %v):\n%s", err, log)
		}
		if log, err := os.ReadFile(filepath.Join(demoDir, "logs", "proxy-access.log")); err != nil || bytes.Count(log, []byte("\n")) < 600 {
			t.Errorf("proxy access log: want a line per request, 600 or more (err %v), got %d lines", err, bytes.Count(log, []byte("\n")))
		}
		for _, p := range ports {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second); err == nil {
				c.Close()
				t.Errorf("port %s still answers after the demo ended", p)
			}
		}
		if left := processesUnder(t, bin); len(left) > 0 {
			t.Errorf("processes left running: %v", left)
		}
	})

	// Issue 2: running the demo again works. The folder the first run left
	// behind is reused.
	t.Run("runs again in the same folder", func(t *testing.T) {
		out, err := runDemo(t, env)
		if err != nil {
			t.Fatalf("demo.sh, second run: %v\n%s", err, out)
		}
		for _, want := range []string{"users served by user-service", "the guard tripped", "==> stopped"} {
			if !strings.Contains(out, want) {
				t.Errorf("second run's output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "did not stop") {
			t.Errorf("second run: an app had to be killed:\n%s", out)
		}
		if left := processesUnder(t, bin); len(left) > 0 {
			t.Errorf("second run: processes left running: %v", left)
		}
	})

	// Interactive: the demo waits for Ctrl-C after showing everything.
	interactive := append([]string{"DEMO_NONINTERACTIVE=0"}, env[1:]...)
	t.Run("Ctrl-C stops everything", func(t *testing.T) {
		d := startDemo(t, interactive)
		d.waitFor(t, "Press Ctrl-C to stop everything.")
		// A terminal's Ctrl-C goes to the whole foreground process group.
		if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := d.wait(t); err != nil {
			t.Errorf("demo.sh after Ctrl-C: got %v, want exit 0", err)
		}
		out := d.out.String()
		if !strings.Contains(out, "==> stopped") || strings.Contains(out, "did not stop") {
			t.Errorf("output after Ctrl-C: want everything stopped in order:\n%s", out)
		}
		checkStopped(t, bin, ports)
	})

	t.Run("a run killed with SIGKILL is cleaned up by the next", func(t *testing.T) {
		d := startDemo(t, interactive)
		t.Cleanup(func() { killUnder(t, bin) }) // in case the next run fails to stop them
		d.waitFor(t, "Press Ctrl-C to stop everything.")
		// Only the script dies: its apps and PostgreSQL are left running.
		if err := d.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = d.wait(t)
		if left := processesUnder(t, bin); len(left) == 0 {
			t.Fatal("after killing the script: got no app left running, want the apps an unclean end leaves")
		}
		out, err := runDemo(t, env)
		if err != nil {
			t.Fatalf("demo.sh after a killed run: %v\n%s", err, out)
		}
		for _, want := range []string{"left running by an earlier demo", "==> stopped"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		checkStopped(t, bin, ports)
	})

	for _, tc := range []struct{ port, what, setting string }{
		{ports[2], "user-service", "DEMO_USERS_PORT"},
		{ports[4], "strangler-proxy", "DEMO_PROXY_PORT"},
	} {
		t.Run("port in use/"+tc.what, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:"+tc.port)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			out, err := runDemo(t, env)
			if err == nil {
				t.Fatalf("demo.sh with port %s taken: got success, want an error\n%s", tc.port, out)
			}
			want := fmt.Sprintf("port %s for %s is already in use", tc.port, tc.what)
			if !strings.Contains(out, want) || !strings.Contains(out, tc.setting) {
				t.Errorf("output: got %q, want it to contain %q and %s", out, want, tc.setting)
			}
		})
	}
}

// checkStopped fails tb when a demo's port still answers or one of its apps
// still runs.
func checkStopped(tb testing.TB, bin string, ports []string) {
	tb.Helper()
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second); err == nil {
			c.Close()
			tb.Errorf("port %s still answers after the demo ended", p)
		}
	}
	if left := processesUnder(tb, bin); len(left) > 0 {
		tb.Errorf("processes left running: %v", left)
	}
}

// demo is demo.sh running in a process group of its own.
type demo struct {
	cmd  *exec.Cmd
	out  *testkit.Buffer
	done chan error
}

func startDemo(tb testing.TB, env []string) *demo {
	tb.Helper()
	d := &demo{cmd: exec.Command("bash", "demo.sh"), out: &testkit.Buffer{}, done: make(chan error, 1)}
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	tb.Cleanup(func() {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-d.done:
			d.done <- err
		case <-time.After(2 * time.Minute):
		}
	})
	return d
}

// waitFor waits until the demo has printed want.
func (d *demo) waitFor(tb testing.TB, want string) {
	tb.Helper()
	testkit.Eventually(tb, 2*time.Minute, fmt.Sprintf("the demo to print %q", want), func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			tb.Fatalf("demo.sh ended (%v) before printing %q:\n%s", err, want, d.out.String())
		default:
		}
		return strings.Contains(d.out.String(), want)
	})
}

// wait waits for the demo to end and returns how it ended.
func (d *demo) wait(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(2 * time.Minute):
		tb.Fatalf("demo.sh did not end within 2 minutes:\n%s", d.out.String())
		return nil
	}
}

func runDemo(tb testing.TB, env []string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "demo.sh")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// buildApps builds the three example apps, strangler-proxy and datasync into a
// temporary folder.
func buildApps(tb testing.TB) string {
	tb.Helper()
	bin := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/...", "./example-monolith", "./example-services/...")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePorts(tb testing.TB, n int) []string {
	tb.Helper()
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	}
	return ports
}

// killUnder kills the running processes whose program is in dir.
func killUnder(tb testing.TB, dir string) {
	tb.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(b, []byte(dir+"/")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// processesUnder lists the running processes whose program is in dir.
func processesUnder(tb testing.TB, dir string) []string {
	tb.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		tb.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.HasPrefix(b, []byte(dir+"/")) {
			found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}
