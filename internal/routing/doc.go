// Package routing is the heart of strangler-proxy: the route table, the
// proxy handler, safe fallback to the monolith, circuit breakers and active
// health checks.
//
// A request is matched against the route table (longest prefix on
// path-segment boundaries, see Table). A matched route whose methods allow the
// request asks the Rollout whether this request goes to the route's service or
// to the monolith; everything else goes to the monolith.
//
// A request for a service goes through httputil.ReverseProxy, whose Transport
// is this package's fallback round tripper: it tries the service and, when the
// attempt fails in a way the route allows to fall back on, replays the request
// to the monolith and hands the monolith's answer to the ReverseProxy. So the
// decision is final before anything is written to the client.
//
// Which failures may fall back (DESIGN.md, "Fallback"):
//
//   - connect_error: the connection to the service could not be made (a dial
//     timeout included), so the service never saw the request;
//   - breaker_open: the service's breaker is open or its health check fails,
//     so the request was never sent;
//   - timeout: no response headers within the service's timeout after the
//     request was sent (any other failure after sending counts as this);
//   - status_5xx: the service answered 5xx.
//
// Safe methods (GET, HEAD, OPTIONS) and requests with an Idempotency-Key
// header fall back on every reason in the route's fallback list; other methods
// only on connect_error and breaker_open, unless the route sets replay_unsafe,
// because a write that may have reached the service must not be applied twice.
// Bodies that may need a replay are buffered up to max_replay_body.
//
// Upstream connections: requests without a body go through a lean HTTP/1.1
// client (h1Transport) that writes the request and reads the answer in the
// handler's goroutine, with a pool of kept-alive connections per upstream;
// requests with a body, upgrades and https upstreams go through a tuned
// http.Transport. h1Transport writes the common request shapes and parses
// answers with a Content-Length itself, leaving every other shape (chunked,
// close-delimited, interim 1xx answers, unusual hosts) to net/http. An
// upstream's timeout covers dialing and waiting for the answer's headers, not
// the body, so streams are never cut by it. An exchange that blocks on its
// upstream for more than 100ms starts watching its client, so a client that
// goes away is noticed within that time; faster exchanges, nearly all of
// them, skip the cost of the watch.
//
// Pooled upstream connections are peeked at (a non-blocking MSG_PEEK) before
// every reuse, and one with bytes left over after an answer is closed: bytes
// an upstream sends unasked are never read as the next client's answer.
//
// Requests are screened before routing (hostile.go, issue 16): a repeated
// identity header, an escaped slash (server.escaped_slashes), a backslash, a
// ';' path parameter that changes the route, or a Content-Length above the
// route's max_body is answered 400 or 413 and reaches no upstream. A request
// body that fails to read (malformed, cut short, above max_body while it
// streams) is answered 400 or 413. Such refusals are the client's fault: they
// count against no breaker, fallback or guard, and the Observer never sees
// them. On the way out, headers with '_' in their name are dropped (unless
// server.underscores_in_headers), and identity headers named in Connection
// are kept.
//
// Metrics (registered in the registry passed in): strangler_requests_total
// {route, backend, code}, strangler_request_duration_seconds {route, backend},
// strangler_fallbacks_total {route, reason}, strangler_breaker_state {service}
// and strangler_upstream_healthy {service}. The route label is the route's
// name or prefix ("unrouted" for requests no route matches), never a raw path.
// Requests whose client went away are counted with code 499.
//
// The access log has one JSON line per request with request_id, method, path
// (without query string), route, backend, status, duration_ms, decision (why
// this backend), fallback (the reason, if the monolith answered instead) and
// failure (the service's failure, also when it did not fall back). Headers,
// cookies and query strings are never logged: they carry tokens.
//
// Proxy.Apply swaps in a new configuration atomically; requests in flight
// finish on the configuration they started with, and the breakers and health
// state of services whose settings did not change carry over.
package routing
