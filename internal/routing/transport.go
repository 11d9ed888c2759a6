package routing

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// fallbackTransport is the ReverseProxy's Transport. For a request bound to a
// service it tries the service and, when the failure and the request allow it,
// replays the request to the monolith, so that the answer handed back to the
// ReverseProxy (and so to the client) is final.
type fallbackTransport Proxy

var _ http.RoundTripper = (*fallbackTransport)(nil)

// RoundTrip implements http.RoundTripper.
func (t *fallbackTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	ex := exchangeOf(out.Context())
	if ex == nil {
		return nil, errors.New("round trip: request did not come through Proxy.ServeHTTP")
	}
	if ex.svc == nil {
		ex.backend = BackendMonolith
		return ex.st.monolith.rt.RoundTrip(out)
	}
	return ex.tryService(out)
}

// isSafe reports whether the method is safe (RFC 9110, section 9.2.1).
func isSafe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// tryService sends out to the service and decides on a fallback.
func (ex *exchange) tryService(out *http.Request) (*http.Response, error) {
	route, svc := ex.route, ex.svc
	// A request may fall back after it was sent only if replaying it is
	// harmless: a safe method, an Idempotency-Key, or the route's say-so.
	replayable := isSafe(ex.in.Method) || ex.in.Header.Get("Idempotency-Key") != "" || route.unsafeRep
	afterSend := replayable && (route.FallsBackOn(ReasonTimeout) || route.FallsBackOn(ReasonStatus5xx))

	if !svc.healthy.Load() {
		return ex.breakerOpen(out)
	}
	done, err := svc.breaker.Allow()
	if err != nil {
		return ex.breakerOpen(out)
	}

	// The body: buffered when a replay after sending may be needed, else
	// streamed through a counter that tells whether any of it was read.
	var replay []byte
	var tracked *trackedBody
	if out.Body != nil && out.Body != http.NoBody {
		if afterSend {
			buf, whole, err := readUpTo(out.Body, ex.st.maxReplay)
			if err != nil {
				// Only the client's body can fail here, and nothing was
				// sent: errorHandler answers 400, 413 or 499.
				done(errClientGone)
				return nil, err
			}
			if whole {
				replay = buf
				out.Body = io.NopCloser(bytes.NewReader(buf))
				out.ContentLength = int64(len(buf))
				out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
			} else {
				// Too large to keep: stream it, and give up the fallbacks
				// that need a replay.
				afterSend = false
				out.Body = io.NopCloser(io.MultiReader(bytes.NewReader(buf), out.Body))
			}
		}
		if replay == nil {
			tracked = &trackedBody{r: out.Body}
			out.Body = tracked
		}
	}

	resp, err := svc.rt.RoundTrip(out)
	if err != nil {
		if ex.body.fault() != 0 || out.Context().Err() != nil {
			// The client went away, or sent a body that could not be read
			// whole: neither a service failure nor a reason to bother the
			// monolith.
			done(errClientGone)
			return nil, err
		}
		reason := ReasonTimeout
		var ce *connectError
		if errors.As(err, &ce) {
			reason = ReasonConnectError
		}
		done(err)
		ex.failure = reason
		switch {
		case !route.FallsBackOn(reason):
		case reason == ReasonConnectError && tracked != nil && !tracked.read.Load():
			// Never reached the service, and the body is untouched.
			return ex.fallback(out, reason, tracked.r)
		case reason == ReasonConnectError && tracked == nil:
			return ex.fallback(out, reason, replayBody(replay))
		case reason == ReasonTimeout && afterSend:
			return ex.fallback(out, reason, replayBody(replay))
		}
		return nil, err
	}
	if resp.StatusCode >= 500 {
		done(errStatus5xx)
		ex.failure = ReasonStatus5xx
		if afterSend && route.FallsBackOn(ReasonStatus5xx) {
			discard(resp)
			return ex.fallback(out, ReasonStatus5xx, replayBody(replay))
		}
	} else {
		done(nil)
	}
	ex.backend = BackendService
	return resp, nil
}

// breakerOpen handles a request the service must not get now: the request
// was never sent, so any method may go to the monolith.
func (ex *exchange) breakerOpen(out *http.Request) (*http.Response, error) {
	ex.failure = ReasonBreakerOpen
	if !ex.route.FallsBackOn(ReasonBreakerOpen) {
		return nil, errBreakerOpen
	}
	return ex.fallback(out, ReasonBreakerOpen, out.Body)
}

// fallback sends the request to the monolith, with the original path, body
// as its body, and returns the monolith's answer.
func (ex *exchange) fallback(out *http.Request, reason Reason, body io.ReadCloser) (*http.Response, error) {
	ex.reason = reason
	ex.backend = BackendMonolith
	// A copy: the service's transport may still hold out (for example while
	// it finishes writing a body the service answered early).
	m := *out
	u := *ex.in.URL
	m.URL = &u
	target(&m, ex.st.monolith, nil)
	m.Body = body
	if body == nil || body == http.NoBody {
		m.Body, m.GetBody, m.ContentLength = nil, nil, 0
	}
	return ex.st.monolith.rt.RoundTrip(&m)
}

func replayBody(buf []byte) io.ReadCloser {
	if buf == nil {
		return nil
	}
	return io.NopCloser(bytes.NewReader(buf))
}

// discard drains a little of an answer we do not use, so that its connection
// can be reused, and closes it.
func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<10))
	resp.Body.Close()
}

// readUpTo reads r until EOF or until more than limit bytes. whole reports
// whether buf is all of r.
func readUpTo(r io.Reader, limit int64) (buf []byte, whole bool, err error) {
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, err
	}
	return b.Bytes(), n <= limit, nil
}

// trackedBody passes a request body through, remembering whether any of it
// was read, and leaves closing to the server that owns it: the transport
// closes the bodies it is given, and after a connection error this body must
// stay readable for the monolith.
type trackedBody struct {
	r    io.ReadCloser
	read atomic.Bool // set by the transport's writer goroutine
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read.Store(true)
	}
	return n, err
}

// Close does nothing; see trackedBody.
func (b *trackedBody) Close() error { return nil }
