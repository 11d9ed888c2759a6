package h1serve

import (
	"bufio"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestUpgradedConnectionIsNotGated checks that after a 101 Switching
// Protocols the gate lets every byte through: a tunnel's bytes are not
// requests, even when they look like refused ones.
func TestUpgradedConnectionIsNotGated(t *testing.T) {
	t.Parallel()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "echo")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		brw.Flush()
		io.Copy(c, brw)
	})}
	cc := dial(t, serve(t, s))
	cc.send(t, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %v, %v, want 101", resp, err)
	}
	const tunnel = "GET / HTTP/2.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n \r\n\r\n"
	cc.send(t, tunnel)
	got := make([]byte, len(tunnel))
	if _, err := io.ReadFull(cc.br, got); err != nil || string(got) != tunnel {
		t.Fatalf("echo: got %q, %v, want %q", got, err, tunnel)
	}
}

// TestRefusedHeadNeverReachesHandler checks that a refused head is refused
// before net/http serves it: the handler never runs, even for a request
// that follows a served one on a handed connection.
func TestRefusedHeadNeverReachesHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})}
	cc := dial(t, serve(t, s))
	// HTTP/1.0 keep-alive goes to net/http; then the smuggling attempt.
	cc.send(t, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	cc.expect(t, "HTTP/1.0 request", http.StatusOK, "ok")
	resp, err := http.ReadResponse(bufio.NewReader(cc.br), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("TE with CL: got %v, %v, want 400 and close", resp, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (the refused and the smuggled request must not run)", n)
	}
}
