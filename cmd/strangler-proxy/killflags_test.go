package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
	"github.com/strangler-fig/strangler/internal/toggles"
)

const (
	killToken = "kill-test-token"
	killFlag  = "users-migration"
)

// killPercentages are the values the kill test writes: with two decimals,
// the ends of the range, and of different lengths in the file.
var killPercentages = []float64{0, 5, 12.5, 25, 33.33, 50, 75, 99.99, 100}

// flagOnDisk parses the flags file with the toggles package, as the next
// start will, and returns the test flag's percentage.
func flagOnDisk(tb testing.TB, path string) float64 {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("flags file: %v", err)
	}
	file, err := toggles.Parse(data)
	if err != nil {
		tb.Fatalf("flags file does not parse: %v\n%q", err, data)
	}
	fl, ok := file.Flags[killFlag]
	if !ok {
		tb.Fatalf("flags file: got no flag %s in %q", killFlag, data)
	}
	return fl.Percentage
}

// putPercentage sets the test flag's percentage through the admin API and
// reports whether the proxy answered 200. Any other answer fails the test;
// a request that got no answer (the process was killed) returns false.
func putPercentage(tb testing.TB, client *http.Client, adminURL string, p float64) bool {
	req, err := http.NewRequest(http.MethodPut, adminURL+"/admin/flags/"+killFlag, strings.NewReader(fmt.Sprintf(`{"percentage": %v}`, p)))
	if err != nil {
		tb.Error(err)
		return false
	}
	req.Header.Set("Authorization", "Bearer "+killToken)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false // cut off by the kill
	}
	if resp.StatusCode != http.StatusOK {
		tb.Errorf("PUT percentage %v: got %d %s, want 200", p, resp.StatusCode, body)
		return false
	}
	return true
}

// checkServes checks that a freshly started proxy has the percentage on
// disk in force: in the admin API, and in where it sends a few users.
func checkServes(tb testing.TB, listen, adminListen string, want float64) {
	tb.Helper()
	var v toggles.FlagView
	if err := json.Unmarshal([]byte(body("http://"+adminListen+"/admin/flags/"+killFlag)), &v); err != nil {
		tb.Fatalf("GET flag after the restart: %v", err)
	}
	if v.Percentage != want {
		tb.Fatalf("after the restart: got percentage %v in force, want %v as on disk", v.Percentage, want)
	}
	for i := range 20 {
		user := fmt.Sprintf("u-%d", i)
		req, err := http.NewRequest(http.MethodGet, "http://"+listen+"/api/users", nil)
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set("X-User-ID", user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantBackend := "monolith"
		if toggles.InRollout(killFlag, user, want) {
			wantBackend = "users"
		}
		if string(got) != wantBackend {
			tb.Errorf("after the restart at %v %%, %s: got served by %q, want %q", want, user, got, wantBackend)
		}
	}
}

// startKillProxy writes a config into dir, on new free ports, whose only
// route is flagged by the test flag in dir/flags.yaml, starts the binary on
// it and waits until it is ready.
func startKillProxy(tb testing.TB, bin, dir, monoURL, svcURL string) (proc *process, listen, adminListen string) {
	tb.Helper()
	listen, adminListen = testkit.FreeAddr(tb), testkit.FreeAddr(tb)
	cfg := writeFile(tb, dir, "strangler.yaml", fmt.Sprintf(`listen: %s
access_log: false
admin: {listen: %s, token_env: STRANGLER_TEST_ADMIN_TOKEN}
monolith: {url: %s}
services: {users: {url: %s}}
identity: [{header: X-User-ID}]
flags_file: flags.yaml
routes:
  - {prefix: /api/users, service: users, flag: %s}
`, listen, adminListen, monoURL, svcURL, killFlag))
	proc = startProcess(tb, bin, "serve", "--config", cfg, "--watch", "0")
	waitHTTP(tb, "http://"+adminListen+"/readyz")
	return proc, listen, adminListen
}

// TestFlagsFileSurvivesKill9 runs the real binary and kills it with
// SIGKILL at a random moment of a burst of flag changes through the admin
// API, fifteen times over the same flags file. After each kill the file
// must parse and hold the percentage of the last change the proxy
// acknowledged, or of the one that was in flight when it died (its rename
// may or may not have happened), never a torn or empty file; and a proxy
// started again on the file must have that percentage in force.
// Temporary files a kill leaves beside the flags file are counted and
// reported, not removed: the next start must not trip over them.
func TestFlagsFileSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	mono := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "monolith") }))
	defer mono.Close()
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "users") }))
	defer svc.Close()
	t.Setenv("STRANGLER_TEST_ADMIN_TOKEN", killToken)

	dir := t.TempDir()
	flagsPath := writeFile(t, dir, "flags.yaml", "flags:\n  "+killFlag+": {percentage: 0}\n")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	const rounds = 15
	onDisk := 0.0 // the percentage the file holds between rounds
	var acked, unackedOnDisk int
	for round := range rounds {
		proc, listen, adminListen := startKillProxy(t, bin, dir, mono.URL, svc.URL)
		checkServes(t, listen, adminListen, onDisk)
		if t.Failed() {
			t.Fatalf("round %d: stderr of the proxy:\n%s", round, proc.stderr.String())
		}

		// One client sends changes one after another, each to a value other
		// than the last, until the kill cuts it off.
		type burst struct {
			lastAcked float64 // of the last change answered 200
			acked     int
			inFlight  float64 // the change that got no answer
		}
		// The moment of the kill: a random point of the burst, from its
		// start to 30ms in. The burst's goroutine has the random source to
		// itself until it is done.
		killAfter := time.Duration(rng.IntN(31)) * time.Millisecond
		done := make(chan burst, 1)
		client := &http.Client{Timeout: 10 * time.Second}
		go func() {
			b := burst{lastAcked: onDisk}
			prev := onDisk
			for {
				p := killPercentages[rng.IntN(len(killPercentages))]
				for p == prev {
					p = killPercentages[rng.IntN(len(killPercentages))]
				}
				prev = p
				if !putPercentage(t, client, "http://"+adminListen, p) {
					b.inFlight = p
					done <- b
					return
				}
				b.lastAcked = p
				b.acked++
			}
		}()
		time.Sleep(killAfter) // not a wait for anything: the kill's moment
		if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case <-proc.exited:
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy did not die of SIGKILL")
		}
		var b burst
		select {
		case b = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("the admin client did not stop after the kill")
		}
		client.CloseIdleConnections()

		got := flagOnDisk(t, flagsPath)
		allowed := []float64{b.lastAcked, b.inFlight}
		if !slices.Contains(allowed, got) {
			t.Fatalf("round %d, after %d acknowledged changes: got percentage %v on disk, want the last acknowledged (%v) or the one in flight (%v)",
				round, b.acked, got, b.lastAcked, b.inFlight)
		}
		if got == b.inFlight && got != b.lastAcked {
			unackedOnDisk++
		}
		acked += b.acked
		onDisk = got
	}

	// The last kill's file, loaded by one more start.
	proc, listen, adminListen := startKillProxy(t, bin, dir, mono.URL, svc.URL)
	checkServes(t, listen, adminListen, onDisk)
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-proc.exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: got %v, want exit code 0\nstderr:\n%s", err, proc.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after SIGTERM")
	}

	if acked == 0 {
		t.Errorf("no change was acknowledged in %d rounds: the kills came before any write", rounds)
	}
	// The store names its temporary files ".flags.yaml.*.tmp"; a kill
	// between their creation and the rename leaves them. Nothing reads
	// them; a later write removes those older than a minute (a younger one
	// may be another replica's write in progress), so here they stay.
	leftovers, err := filepath.Glob(filepath.Join(dir, ".flags.yaml.*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rounds: %d changes acknowledged, %d kills after a rename but before its answer, %d temporary files left beside the flags file",
		rounds, acked, unackedOnDisk, len(leftovers))
}
