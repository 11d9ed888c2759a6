package h1serve

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBodyReadAfterTheHandler pins that a goroutine still reading a request
// body after its handler returned (as net/http's Transport may, sending a
// body upstream) is done with the connection's buffer before the server
// lets go of it: here the body is too large to drain, so the connection
// closes after the answer while the goroutine is blocked reading. The race
// detector watches the buffer, which goes back to a pool.
func TestBodyReadAfterTheHandler(t *testing.T) {
	t.Parallel()
	late := make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.Body
		go func() {
			_, err := io.Copy(io.Discard, body)
			late <- err
		}()
		time.Sleep(10 * time.Millisecond) // the copy is blocked, waiting for more
		io.WriteString(w, "early answer")
	})}
	cc := dial(t, serve(t, s))
	cc.send(t, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"+strings.Repeat("x", 1024))
	resp := cc.expect(t, "the POST", http.StatusOK, "early answer")
	if !resp.Close {
		t.Errorf("answer: got header %v, want Connection: close", resp.Header)
	}
	cc.expectClosed(t, "connection after the answer", safety)
	select {
	case err := <-late:
		if err == nil {
			t.Error("the late read of the body read a body that never came")
		}
	case <-time.After(safety):
		t.Fatal("the late read of the body never returned")
	}
	expectStats(t, s, 1, 0)
}
