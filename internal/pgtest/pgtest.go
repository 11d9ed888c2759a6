// Package pgtest starts real PostgreSQL clusters for tests.
//
// Every test binary that needs a database shares one cluster, started on first
// use and stopped when the binary ends:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		db := pgtest.NewDB(t) // a fresh database, dropped when the test ends
//		db.Pool.Exec(ctx, "...")
//	}
//
// The cluster is initialised in a temporary folder with wal_level=logical, fsync
// off and room for many replication slots. When the tests run as root, initdb and
// the server run as the postgres OS user, since PostgreSQL refuses to run as root.
// A watchdog process stops the cluster if the test binary dies without cleaning
// up (a panic, a timeout, kill -9).
//
// Set STRANGLER_TEST_DATABASE_URL to a superuser URL to use an existing server
// instead; databases are then created there.
//
// Tests that must stop or restart a server (crash and reconnect tests) start
// their own with NewCluster.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the variable that points tests at an existing server.
const EnvURL = "STRANGLER_TEST_DATABASE_URL"

// Cluster is a PostgreSQL server started for tests.
type Cluster struct {
	// BinDir holds initdb, pg_ctl and postgres.
	BinDir string
	// Dir is the cluster's temporary folder; its data directory is Dir/data.
	Dir string
	// Port is the TCP port the server listens on at 127.0.0.1.
	Port int

	mu       sync.Mutex
	running  bool
	watchdog *exec.Cmd
	asUser   string // OS user that owns the cluster, "" for the current one
}

// DB is a fresh database in a cluster.
type DB struct {
	// Name is the database's name.
	Name string
	// URL connects to the database as a superuser.
	URL string
	// Pool is a connection pool to the database, closed at test cleanup.
	Pool *pgxpool.Pool
}

var (
	shared     *Cluster
	sharedURL  string // set when EnvURL is used
	sharedErr  error
	sharedOnce sync.Once
	dbCounter  atomic.Int64
)

// Main runs the tests of a package and stops the shared cluster afterwards,
// whatever the outcome. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop shared cluster: %v\n", err)
		}
		shared.remove()
	}
	os.Exit(code)
}

// Shared returns the URL of a superuser connection to the maintenance
// database of the binary's shared server, starting it on first use.
func Shared(tb testing.TB) string {
	tb.Helper()
	sharedOnce.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			sharedURL = u
			return
		}
		shared, sharedErr = Start()
		if sharedErr == nil {
			sharedURL = shared.URL("postgres")
		}
	})
	if sharedErr != nil {
		tb.Fatalf("pgtest: PostgreSQL could not be started: %v", sharedErr)
	}
	return sharedURL
}

// NewDB creates a fresh database on the shared server and drops it when the
// test ends.
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	return newDB(tb, Shared(tb))
}

// NewDB creates a fresh database in this cluster and drops it when the test
// ends.
func (c *Cluster) NewDB(tb testing.TB) *DB {
	tb.Helper()
	return newDB(tb, c.URL("postgres"))
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

func newDB(tb testing.TB, adminURL string) *DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	base := unsafeChars.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := fmt.Sprintf("t_%s_%d_%d", base, os.Getpid(), dbCounter.Add(1))

	admin, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		tb.Fatalf("pgtest: connect to server: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}

	dbURL, err := withDatabase(adminURL, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v", name, err)
	}
	tb.Cleanup(func() {
		pool.Close()
		if err := dropDatabase(adminURL, name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return &DB{Name: name, URL: dbURL, Pool: pool}
}

// dropDatabase drops a test database together with the replication slots and
// sessions that would keep it alive.
func dropDatabase(adminURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("drop database %s: connect: %w", name, err)
	}
	defer admin.Close()
	// A logical slot pins its database; a walsender using it must go first.
	_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE database = $1 AND active_pid IS NOT NULL`, name)
	for i := 0; i < 50; i++ {
		_, err = admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = $1 AND NOT active`, name)
		var n int
		_ = admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&n)
		if err == nil && n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// NewCluster starts a cluster of the test's own, stopped and removed when the
// test ends. Use it where a test stops or restarts the server.
func NewCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := Start()
	if err != nil {
		tb.Fatalf("pgtest: PostgreSQL could not be started: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
		c.remove()
	})
	return c
}

// NewTwoWayCluster starts a cluster of the test's own with
// track_commit_timestamp on, which two-way sync and two-way verify need
// (the shared cluster keeps it off, so that their refusals without it can be
// tested).
func NewTwoWayCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c := NewCluster(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgxpool.New(ctx, c.URL("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	_, err = admin.Exec(ctx, `ALTER SYSTEM SET track_commit_timestamp = on`)
	admin.Close()
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Restart(); err != nil {
		tb.Fatal(err)
	}
	return c
}

// URL returns a superuser URL for database db in the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, url.PathEscape(db))
}

// Start initialises and starts a new cluster in a temporary folder.
func Start() (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{BinDir: bin}
	if os.Geteuid() == 0 {
		c.asUser = "postgres"
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("running as root needs the postgres OS user (install the postgresql package): %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	c.Dir = dir
	if c.asUser != "" {
		if err := chownToUser(dir, c.asUser); err != nil {
			c.remove()
			return nil, err
		}
	}
	out, err := c.command(filepath.Join(bin, "initdb"), "-D", c.dataDir(), "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		c.remove()
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	conf := strings.Join([]string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + c.Dir + "'",
		"wal_level = logical",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 200",
		"max_replication_slots = 40",
		"max_wal_senders = 40",
		"shared_buffers = 64MB",
		"wal_sender_timeout = 0",
		"log_min_messages = warning",
		"",
	}, "\n")
	if err := appendFile(filepath.Join(c.dataDir(), "postgresql.conf"), conf); err != nil {
		c.remove()
		return nil, err
	}
	if err := c.startOnFreePort(); err != nil {
		c.remove()
		return nil, err
	}
	c.startWatchdog()
	return c, nil
}

func (c *Cluster) startOnFreePort() error {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.Port = port
		if lastErr = c.Start(); lastErr == nil {
			return nil
		}
	}
	return lastErr
}

// Start starts the cluster's server (again) on its port and waits until it
// accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	logFile := filepath.Join(c.Dir, "server.log")
	out, err := c.command(filepath.Join(c.BinDir, "pg_ctl"), "start", "-w", "-t", "60",
		"-D", c.dataDir(), "-l", logFile, "-o", "-p "+strconv.Itoa(c.Port)).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start on port %d: %w: %s\nserver log:\n%s", c.Port, err, out, tail(log, 2000))
	}
	c.running = true
	return nil
}

// Stop stops the server with a fast shutdown. It is safe to call twice.
func (c *Cluster) Stop() error {
	return c.stop("fast")
}

// Crash stops the server the way a crash would (immediate mode: no
// checkpoint, clients cut off).
func (c *Cluster) Crash() error {
	return c.stop("immediate")
}

func (c *Cluster) stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	out, err := c.command(filepath.Join(c.BinDir, "pg_ctl"), "stop", "-w", "-t", "60",
		"-D", c.dataDir(), "-m", mode).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	c.running = false
	return nil
}

// Restart stops the server and starts it again on the same port.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

func (c *Cluster) remove() {
	if c.watchdog != nil && c.watchdog.Process != nil {
		_ = c.watchdog.Process.Kill()
		_ = c.watchdog.Wait()
	}
	if c.Dir != "" {
		_ = os.RemoveAll(c.Dir)
	}
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }

// startWatchdog starts a detached shell that stops the server and removes its
// folder once this process is gone, so a test binary killed by a timeout or
// kill -9 leaves no server behind.
func (c *Cluster) startWatchdog() {
	pgctl := filepath.Join(c.BinDir, "pg_ctl")
	stop := fmt.Sprintf("%s stop -D %s -m immediate", pgctl, c.dataDir())
	if c.asUser != "" {
		stop = "runuser -u " + c.asUser + " -- " + stop
	}
	script := fmt.Sprintf("while kill -0 %d 2>/dev/null; do sleep 1; done; %s >/dev/null 2>&1; rm -rf %s",
		os.Getpid(), stop, c.Dir)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err == nil {
		c.watchdog = cmd
	}
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	if c.asUser != "" {
		args = append([]string{"-u", c.asUser, "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = c.Dir
	// pg_ctl's server must not be in our process group, so that a Ctrl-C to
	// the test run reaches the tests and the cleanup, not the server first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// BinDir finds the folder with PostgreSQL's server programs: $PG_BIN, else the
// newest /usr/lib/postgresql/*/bin, else the folder of initdb on PATH.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no initdb found: install PostgreSQL (apt-get install -y postgresql), set PG_BIN, or set " + EnvURL)
}

func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func chownToUser(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", dir, name, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func withDatabase(rawURL, db string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse server URL: %w", err)
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String(), nil
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
