package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/testkit"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const adminToken = "e2e-admin-token"

// proc is a program of the toolkit run as a process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testkit.Buffer
	done chan struct{}
}

// start runs bin with args and env; the process is killed at cleanup.
func start(tb testing.TB, name, bin string, env []string, args ...string) *proc {
	tb.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &testkit.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, tail(p.out.String(), 4000))
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits for the process to end and returns its exit code.
func (p *proc) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		tb.Fatalf("%s did not exit within %v; output:\n%s", p.name, timeout, tail(p.out.String(), 4000))
		return -1
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// buildAll builds the four programs into one folder.
func buildAll(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./cmd/strangler-proxy", "./cmd/datasync", "./example-monolith", "./example-services/user-service")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

func waitHTTP(tb testing.TB, p *proc, url string) {
	tb.Helper()
	testkit.Eventually(tb, 60*time.Second, p.name+" at "+url, func() bool {
		if !p.running() {
			tb.Fatalf("%s exited during start-up:\n%s", p.name, p.out.String())
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// user is a row of users as the apps show it.
type user struct {
	ID       int64  `json:"id"`
	Email    string `json:"email"`
	Username string `json:"username"`
}

// ack is an acknowledged write: the row as its last acknowledged write left it.
type ack struct {
	user
	servedBy string // who took the create
	actor    string // the X-User-ID that made it
	deleted  bool   // a DELETE of it was acknowledged
}

// send sends a JSON request through the proxy as actor and returns the code,
// the X-Served-By and the decoded row.
func send(client *http.Client, method, url, actor string, body any) (int, string, user, error) {
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		return 0, "", user{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User-ID", actor)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", user{}, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var u user
	if resp.StatusCode/100 == 2 && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, &u); err != nil {
			return resp.StatusCode, "", u, fmt.Errorf("decode %s: %w", data, err)
		}
	}
	return resp.StatusCode, resp.Header.Get("X-Served-By"), u, nil
}

// writers create users through the proxy and update the ones they created,
// each writer its own rows one after another, and keep every acknowledged
// write.
type writers struct {
	mu      sync.Mutex
	acked   map[int64]*ack
	served  map[string]int // creates acknowledged, by X-Served-By
	updates int
	deletes int
	errors  []string
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startWriters(tb testing.TB, proxyURL string, n int) *writers {
	w := &writers{acked: map[int64]*ack{}, served: map[string]int{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	for g := 0; g < n; g++ {
		w.wg.Add(1)
		go func(g int) {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var mine []*ack
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				if len(mine) > 0 && rng.IntN(12) == 0 {
					// Delete one of this writer's rows, as the user who made
					// it, on whichever side the cohort now sends it to: an
					// update acknowledged on the other side may not have
					// arrived yet, and the later delete must win on both.
					k := rng.IntN(len(mine))
					a := mine[k]
					code, _, _, err := send(client, http.MethodDelete, fmt.Sprintf("%s/api/users/%d", proxyURL, a.ID), a.actor, nil)
					w.mu.Lock()
					switch {
					case err != nil:
						w.errors = append(w.errors, "DELETE: "+err.Error())
					case code == http.StatusNoContent:
						a.deleted = true
						w.deletes++
						mine = append(mine[:k], mine[k+1:]...)
					case code == http.StatusNotFound:
					default:
						w.errors = append(w.errors, fmt.Sprintf("DELETE %d: status %d", a.ID, code))
					}
					w.mu.Unlock()
					continue
				}
				if len(mine) > 0 && rng.IntN(3) == 0 {
					// Update one of this writer's rows, as the user who made it:
					// the cohort may have moved since, and the row may not have
					// reached that side yet (404 is then an honest answer).
					a := mine[rng.IntN(len(mine))]
					name := fmt.Sprintf("%s-u%d", a.Email, i)
					code, _, _, err := send(client, http.MethodPut, fmt.Sprintf("%s/api/users/%d", proxyURL, a.ID), a.actor,
						map[string]string{"email": a.Email, "username": name})
					w.mu.Lock()
					switch {
					case err != nil:
						w.errors = append(w.errors, "PUT: "+err.Error())
					case code == http.StatusOK:
						a.Username = name
						w.updates++
					case code == http.StatusNotFound:
					default:
						w.errors = append(w.errors, fmt.Sprintf("PUT %d: status %d", a.ID, code))
					}
					w.mu.Unlock()
					continue
				}
				actor := fmt.Sprint(1 + rng.IntN(500))
				email := fmt.Sprintf("w%d-%d@example.com", g, i)
				code, by, u, err := send(client, http.MethodPost, proxyURL+"/api/users", actor,
					map[string]string{"email": email, "username": "w" + email})
				w.mu.Lock()
				switch {
				case err != nil:
					w.errors = append(w.errors, "POST: "+err.Error())
				case code == http.StatusCreated:
					if prev, dup := w.acked[u.ID]; dup {
						w.errors = append(w.errors, fmt.Sprintf("id %d handed out twice: %s by %s and %s by %s", u.ID, prev.Email, prev.servedBy, u.Email, by))
					}
					a := &ack{user: u, servedBy: by, actor: actor}
					w.acked[u.ID] = a
					w.served[by]++
					mine = append(mine, a)
				default:
					w.errors = append(w.errors, fmt.Sprintf("POST %s: status %d", email, code))
				}
				w.mu.Unlock()
			}
		}(g)
	}
	return w
}

func (w *writers) halt() {
	close(w.stop)
	w.wg.Wait()
}

func setPercentage(tb testing.TB, adminURL string, pct int) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPut, adminURL+"/admin/flags/users-migration",
		strings.NewReader(fmt.Sprintf(`{"percentage": %d}`, pct)))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("set percentage %d: %v", pct, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("set percentage %d: status %d: %s", pct, resp.StatusCode, body)
	}
}

func rows(tb testing.TB, pool *pgxpool.Pool) map[int64]user {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := pool.Query(ctx, `SELECT id, email, username FROM users`)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	out := map[int64]user{}
	for r.Next() {
		var u user
		if err := r.Scan(&u.ID, &u.Email, &u.Username); err != nil {
			tb.Fatal(err)
		}
		out[u.ID] = u
	}
	if err := r.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestCoexistenceRollout is the migration's write phase as an operator runs
// it: the proxy sends a share of the users to the user-service while both
// apps take writes, datasync sync --two-way keeps the two databases equal,
// the rollout goes 0 -> 50 -> 100 -> 0 %, and the sync is killed with
// SIGKILL halfway and started again. Every acknowledged write must end up on
// both sides, nothing may come back to the side that made it (no echo), and
// verify --two-way must find the two consistent.
func TestCoexistenceRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the programs and runs them against PostgreSQL")
	}
	bin := buildAll(t)
	cluster := pgtest.NewTwoWayCluster(t)
	mono, users := cluster.NewDB(t), cluster.NewDB(t)

	monoAddr, usersAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	monolith := start(t, "example-monolith", filepath.Join(bin, "example-monolith"),
		[]string{"DATABASE_URL=" + mono.URL, "ADDR=" + monoAddr, "SEED_USERS=300"})
	service := start(t, "user-service", filepath.Join(bin, "user-service"),
		[]string{"DATABASE_URL=" + users.URL, "ADDR=" + usersAddr})
	waitHTTP(t, monolith, "http://"+monoAddr+"/health")
	waitHTTP(t, service, "http://"+usersAddr+"/health")

	syncArgs := []string{"sync", "--two-way", "--name", "coexist",
		"--source", mono.URL, "--target", users.URL, "--table", "users"}
	syncEnv := []string{"DATASYNC_SOURCE=", "DATASYNC_TARGET="}
	sync := start(t, "datasync sync", filepath.Join(bin, "datasync"), syncEnv, syncArgs...)
	testkit.Eventually(t, 120*time.Second, "the first copy of users", func() bool {
		if !sync.running() {
			t.Fatalf("datasync sync exited:\n%s", sync.out.String())
		}
		return len(rows(t, users.Pool)) == 300
	})

	dir := t.TempDir()
	proxyAddr, adminAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	config := fmt.Sprintf(`listen: %s
access_log: false
admin: {listen: %s, token_env: E2E_ADMIN_TOKEN}
monolith: {url: "http://%s", timeout: 10s}
services:
  users: {url: "http://%s", timeout: 5s}
identity:
  - header: X-User-ID
flags_file: flags.yaml
routes:
  - prefix: /api/users
    service: users
    flag: users-migration
`, proxyAddr, adminAddr, monoAddr, usersAddr)
	for name, text := range map[string]string{
		"strangler.yaml": config,
		"flags.yaml":     "flags:\n  users-migration: {percentage: 0}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	proxy := start(t, "strangler-proxy", filepath.Join(bin, "strangler-proxy"),
		[]string{"E2E_ADMIN_TOKEN=" + adminToken}, "serve", "--config", filepath.Join(dir, "strangler.yaml"))
	adminURL, proxyURL := "http://"+adminAddr, "http://"+proxyAddr
	waitHTTP(t, proxy, adminURL+"/readyz")

	w := startWriters(t, proxyURL, 4)
	phase := func(pct int, d time.Duration) {
		setPercentage(t, adminURL, pct)
		time.Sleep(d)
	}
	phase(0, time.Second)
	phase(50, 2*time.Second)
	// SIGKILL: no chance to finish the transaction in hand or to say where it
	// stopped. The restart must resume both directions with nothing lost and
	// nothing applied twice.
	if err := sync.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-sync.done
	time.Sleep(time.Second) // writes go on while no sync runs
	sync = start(t, "datasync sync (restarted)", filepath.Join(bin, "datasync"), syncEnv, syncArgs...)
	time.Sleep(2 * time.Second)
	phase(100, 2*time.Second)
	phase(0, 2*time.Second)
	w.halt()

	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("acknowledged creates by backend: %v; updates: %d; deletes: %d; errors: %d", w.served, w.updates, w.deletes, len(w.errors))
	for _, e := range w.errors {
		t.Errorf("writer: %s", e)
	}
	if w.served["user-service"] == 0 || w.served["monolith"] == 0 {
		t.Fatalf("both backends must have taken creates, got %v", w.served)
	}

	// Drain: stop the running sync (SIGTERM: it finishes the transaction in
	// hand) and let a second run apply what is left in both directions.
	if err := sync.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sync.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("datasync sync exited %d after SIGTERM:\n%s", code, tail(sync.out.String(), 4000))
	}
	drain := start(t, "datasync sync --until-caught-up", filepath.Join(bin, "datasync"), syncEnv,
		append(syncArgs, "--until-caught-up")...)
	if code := drain.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("datasync sync --until-caught-up exited %d:\n%s", code, drain.out.String())
	}

	// Every acknowledged write is on both sides, as its last acknowledged
	// write left it; and the two sides hold the same rows.
	src, dst := rows(t, mono.Pool), rows(t, users.Pool)
	for id, a := range w.acked {
		for side, got := range map[string]map[int64]user{"monolith": src, "user-service": dst} {
			u, ok := got[id]
			switch {
			case a.deleted && ok:
				t.Errorf("user %d (%s), deleted with an acknowledged DELETE, is still in the %s's database: %+v", id, a.Email, side, u)
			case a.deleted:
			case !ok:
				t.Errorf("user %d (%s, created through the %s) is missing in the %s's database", id, a.Email, a.servedBy, side)
			case u != a.user:
				t.Errorf("user %d in the %s's database: got %+v, want the last acknowledged %+v", id, side, u, a.user)
			}
		}
	}
	if len(src) != len(dst) {
		t.Errorf("monolith has %d users, user-service %d", len(src), len(dst))
	}
	for id, u := range src {
		if v, ok := dst[id]; !ok || v != u {
			t.Errorf("user %d: monolith %+v, user-service %+v", id, u, v)
		}
	}

	// No echo: a row that only the monolith ever wrote still has a local
	// transaction as its last writer in the monolith (an echo would have
	// rewritten it under the sync's origin), and likewise in the service.
	echoes := func(pool *pgxpool.Pool, origin string, ids []int64) int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var n int
		err := pool.QueryRow(ctx, `
			SELECT count(*) FROM users u
			CROSS JOIN LATERAL pg_xact_commit_timestamp_origin(u.xmin) AS c
			JOIN pg_replication_origin o ON o.roident = c.roident
			WHERE o.roname = $1 AND u.id = ANY($2)`, origin, ids).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var byMonolith, byService []int64
	for id, a := range w.acked {
		if a.deleted {
			continue
		}
		if a.servedBy == "monolith" && !strings.Contains(a.Username, "-u") {
			byMonolith = append(byMonolith, id)
		}
		if a.servedBy == "user-service" && !strings.Contains(a.Username, "-u") {
			byService = append(byService, id)
		}
	}
	if n := echoes(mono.Pool, "datasync_coexist_to_source", byMonolith); n != 0 {
		t.Errorf("%d of %d users created in the monolith and never updated came back to it from the service (echo)", n, len(byMonolith))
	}
	if n := echoes(users.Pool, "datasync_coexist_to_target", byService); n != 0 {
		t.Errorf("%d of %d users created in the user-service and never updated came back to it from the monolith (echo)", n, len(byService))
	}

	// Rolled back to 0 %: every account, wherever it was created, is served
	// (by the monolith) to the user who made it.
	client := &http.Client{Timeout: 10 * time.Second}
	for id, a := range w.acked {
		if a.deleted {
			continue
		}
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/users/%d", proxyURL, id), nil)
		req.Header.Set("X-User-ID", a.actor)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Served-By") != "monolith" {
			t.Errorf("GET /api/users/%d at 0 %%: status %d from %q, want 200 from the monolith", id, resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	}

	verify := start(t, "datasync verify --two-way", filepath.Join(bin, "datasync"), syncEnv,
		"verify", "--two-way", "--name", "coexist", "--source", mono.URL, "--target", users.URL, "--table", "users")
	if code := verify.wait(t, 120*time.Second); code != 0 {
		t.Errorf("datasync verify --two-way exited %d, want 0 (consistent):\n%s", code, verify.out.String())
	}
}
