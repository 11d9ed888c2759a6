package h1serve

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// proxyLike reads the whole body, as a proxy buffering it would, and
// answers 502 when that fails (as ReverseProxy's default error handler
// does), or nothing when the request's context was canceled (as a proxy
// does for a client gone); errs receives the read's error.
func proxyLike(errs chan<- error, silentOnCancel bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errs <- err
		if silentOnCancel && r.Context().Err() != nil {
			return
		}
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "upstream failed")
			return
		}
		io.WriteString(w, "ok")
	})
}

// TestStalledBodyTimesOut pins issue 16's finding 4: a body that stops
// (Content-Length 10, 2 bytes sent) held the request, and the upstream
// connection its handler opened, for ever. Now the body's read fails with
// an error that matches ErrBodyTimeout and says it is the client's fault,
// the request's context is canceled, the client gets 408 (not the handler's
// 502) and the connection closes; on the fast path and on net/http's.
func TestStalledBodyTimesOut(t *testing.T) {
	t.Parallel()
	type tcase struct {
		name   string
		head   string
		fast   uint64
		handed uint64
		noFast bool
		silent bool
	}
	cases := []tcase{
		{"fast path", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", 1, 0, false, false},
		{"fast path disabled", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", 0, 1, true, false},
		{"net/http path", "POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", 0, 1, false, false},
		{"net/http chunked", "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n", 0, 1, false, false},
	}
	for _, tc := range cases[:len(cases):len(cases)] {
		tc.name += ", handler silent once canceled"
		tc.silent = true
		cases = append(cases, tc)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			errs := make(chan error, 1)
			s := &Server{Handler: proxyLike(errs, tc.silent), BodyReadTimeout: 200 * time.Millisecond, DisableFastPath: tc.noFast}
			cc := dial(t, serve(t, s))
			cc.send(t, tc.head+"ab")
			resp := cc.expect(t, "stalled body", http.StatusRequestTimeout, timeoutAnswer)
			if !resp.Close {
				t.Error("the 408 does not say Connection: close")
			}
			cc.expectClosed(t, "after the 408", safety)
			err := <-errs
			if !errors.Is(err, ErrBodyTimeout) {
				t.Fatalf("body read error: got %v, want one matching ErrBodyTimeout", err)
			}
			var cf interface{ ClientFault() bool }
			if !errors.As(err, &cf) || !cf.ClientFault() {
				t.Errorf("body read error %v does not say it is the client's fault", err)
			}
			expectStats(t, s, tc.fast, tc.handed)
		})
	}
}

// TestTrickledBodyHitsRequestTimeout checks the total limit: a client that
// sends a byte now and then, each within the idle timeout, is cut off once
// the request has lasted RequestTimeout.
func TestTrickledBodyHitsRequestTimeout(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	s := &Server{Handler: proxyLike(errs, false), BodyReadTimeout: time.Minute, RequestTimeout: 300 * time.Millisecond}
	cc := dial(t, serve(t, s))
	cc.send(t, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := io.WriteString(cc, "x"); err != nil {
					return
				}
			}
		}
	}()
	cc.expect(t, "trickled body", http.StatusRequestTimeout, timeoutAnswer)
	if err := <-errs; !errors.Is(err, ErrBodyTimeout) {
		t.Fatalf("body read error: got %v, want one matching ErrBodyTimeout", err)
	}
}

// TestCutShortBodyIsClientFault checks that a body the client cuts short
// reads as net/http's would (io.ErrUnexpectedEOF) and says it is the
// client's fault, so that a proxy need not count it against the upstream.
func TestCutShortBodyIsClientFault(t *testing.T) {
	t.Parallel()
	for _, head := range []string{
		"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
		"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n",
	} {
		errs := make(chan error, 1)
		s := &Server{Handler: proxyLike(errs, false)}
		cc := dial(t, serve(t, s))
		cc.send(t, head+strings.Repeat("a", 10))
		cc.Conn.(interface{ CloseWrite() error }).CloseWrite()
		err := <-errs
		var cf interface{ ClientFault() bool }
		if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &cf) {
			t.Errorf("%q: body read error: got %v (%T), want io.ErrUnexpectedEOF marked as the client's fault", head, err, err)
		}
	}
}
