package routing

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// startNginx runs nginx in front of upstream, with upstream keepalive as
// bench/proxy.sh sets it up and client_max_body_size as given, and returns
// its address. The test is skipped when nginx is not installed.
func startNginx(tb testing.TB, upstream, maxBody string) string {
	tb.Helper()
	bin := peerBinary(tb, "nginx")
	dir := tb.TempDir()
	addr := testkit.FreeAddr(tb)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream up { server %[2]s; keepalive 16; }
  server {
    listen %[3]s;
    client_max_body_size %[4]s;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, dir, upstream, addr, maxBody)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	runPeer(tb, addr, exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log")))
	return addr
}

// startHAProxy runs HAProxy in front of upstream with "http-reuse always",
// as bench/proxy.sh sets it up, and returns its address. The test is
// skipped when HAProxy is not installed.
func startHAProxy(tb testing.TB, upstream string) string {
	tb.Helper()
	bin := peerBinary(tb, "haproxy")
	addr := testkit.FreeAddr(tb)
	conf := fmt.Sprintf(`global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend front
  bind %s
  default_backend up
backend up
  server up %s
`, addr, upstream)
	path := filepath.Join(tb.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	runPeer(tb, addr, exec.Command(bin, "-db", "-f", path))
	return addr
}

// peerBinary finds a peer proxy's binary, or skips the test.
func peerBinary(tb testing.TB, name string) string {
	tb.Helper()
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	tb.Skipf("%s is not installed (apt-get install %s): the comparison with it is skipped", name, name)
	return ""
}

// runPeer starts a peer proxy, stops it when the test ends, and waits for
// it to listen on addr.
func runPeer(tb testing.TB, addr string, cmd *exec.Cmd) {
	tb.Helper()
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	testkit.Eventually(tb, 10*time.Second, filepath.Base(cmd.Path)+" to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestHostileInputLikePeers sends the same raw requests through
// strangler-proxy and through nginx, each in front of its own recording
// upstream, and expects the same answers and the same bytes upstream: the
// expectations of issue 16 where nginx already meets them. HAProxy runs the
// stray bytes case only: it forwards '_' headers and has no default body
// limit.
func TestHostileInputLikePeers(t *testing.T) {
	type front func(t *testing.T, upstream *rawBackend) string
	fronts := []struct {
		name      string
		start     front
		strayOnly bool
	}{
		{"strangler-proxy", func(t *testing.T, up *rawBackend) string {
			tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
max_body: 1KiB
`, up.URL()))
			return tp.addr()
		}, false},
		{"nginx", func(t *testing.T, up *rawBackend) string { return startNginx(t, up.addr, "1k") }, false},
		{"haproxy", func(t *testing.T, up *rawBackend) string { return startHAProxy(t, up.addr) }, true},
	}
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			t.Run("header with '_' dropped", func(t *testing.T) {
				if f.strayOnly {
					t.Skip("not a default of this peer")
				}
				up := newRawBackend(t, nil)
				addr := f.start(t, up)
				got := sendRaw(t, addr, "GET", "GET /orders HTTP/1.1\r\nHost: shop.example\r\nX_User_ID: alice\r\nX-Kept: yes\r\n\r\n")
				if got.status != 200 {
					t.Fatalf("got %d (%v), want 200", got.status, got.err)
				}
				if raw := up.received(); strings.Contains(raw, "X_User_ID") || !strings.Contains(raw, "X-Kept: yes") {
					t.Errorf("upstream got:\n%s\nwant X-Kept and no X_User_ID", raw)
				}
			})
			t.Run("Content-Length above the limit", func(t *testing.T) {
				if f.strayOnly {
					t.Skip("not a default of this peer")
				}
				up := newRawBackend(t, nil)
				addr := f.start(t, up)
				got := sendRaw(t, addr, "POST", "POST /orders HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4096\r\n\r\n")
				if got.status != http.StatusRequestEntityTooLarge {
					t.Errorf("got %d (%v), want 413", got.status, got.err)
				}
				if raw := up.received(); raw != "" {
					t.Errorf("upstream got %q, want nothing", raw)
				}
			})
			t.Run("malformed chunked body", func(t *testing.T) {
				if f.strayOnly {
					t.Skip("not a default of this peer")
				}
				up := newRawBackend(t, nil)
				addr := f.start(t, up)
				got := sendRaw(t, addr, "POST", "POST /orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
				if got.status != http.StatusBadRequest {
					t.Errorf("got %d (%v), want 400", got.status, got.err)
				}
				if reqs := up.requests(); len(reqs) != 0 {
					t.Errorf("upstream got complete requests %q, want none", reqs)
				}
			})
			t.Run("stray bytes after an answer", func(t *testing.T) {
				written := make(chan struct{}, 1)
				up := newRawBackend(t, func(conn net.Conn, req *http.Request, _ []byte) {
					io.WriteString(conn, plainAnswer(req.Method, req.URL.Path))
					time.Sleep(5 * time.Millisecond)
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray!")
					written <- struct{}{}
				})
				addr := f.start(t, up)
				for i := range 8 {
					path := fmt.Sprintf("/orders/%d", i)
					got := sendRaw(t, addr, "GET", "GET "+path+" HTTP/1.1\r\nHost: shop.example\r\n\r\n")
					if got.status != 200 || got.body != path {
						if f.name != "strangler-proxy" {
							// A peer notices stray bytes in its event loop,
							// which a loaded machine can delay past the next
							// request: its result is shown, not asserted.
							t.Logf("%s: client %d got %d %q, want 200 %q", f.name, i, got.status, got.body, path)
							return
						}
						t.Fatalf("client %d: got %d %q, want 200 %q", i, got.status, got.body, path)
					}
					<-written
				}
			})
		})
	}
}
