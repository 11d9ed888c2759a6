package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StartNginx runs nginx as a reverse proxy to upstream (HTTP/1.1 with
// upstream keep-alive, as bench/proxy.sh sets it up) until the test ends,
// and returns its address. server holds more directives for its server
// block, such as "client_max_body_size 1k;". The test is skipped, saying
// why, when nginx is not installed (scripts/ensure-peers.sh installs it).
func StartNginx(tb testing.TB, upstream, server string) string {
	tb.Helper()
	bin := peerBinary(tb, "nginx")
	dir := tb.TempDir()
	addr := FreeAddr(tb)
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
    %[4]s
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, dir, upstream, addr, server)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	runPeer(tb, addr, bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	return addr
}

// StartHAProxy runs HAProxy in front of upstream with "http-reuse always",
// as bench/proxy.sh sets it up, until the test ends, and returns its
// address. defaults holds more lines for its defaults section. The test is
// skipped, saying why, when HAProxy is not installed.
func StartHAProxy(tb testing.TB, upstream, defaults string) string {
	tb.Helper()
	bin := peerBinary(tb, "haproxy")
	addr := FreeAddr(tb)
	conf := fmt.Sprintf(`global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  %[3]s
frontend front
  bind %[1]s
  default_backend up
backend up
  server up %[2]s
`, addr, upstream, defaults)
	path := filepath.Join(tb.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	runPeer(tb, addr, bin, "-db", "-f", path)
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
	tb.Skipf("%s is not installed (scripts/ensure-peers.sh installs it): the comparison with it is skipped", name)
	return ""
}

// runPeer runs a peer proxy until the test ends and waits until addr
// accepts connections; the peer's output is shown if it fails to.
func runPeer(tb testing.TB, addr, bin string, args ...string) {
	tb.Helper()
	var out Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			tb.Fatalf("%s exited: %s", filepath.Base(bin), out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s does not listen on %s: %s", filepath.Base(bin), addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
