package routing

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// identityProxy serves /api/users from svc for the users its rollout sends
// there: those whose X-User-ID (the first, as toggles reads it) is in
// service; everyone else goes to mono.
func identityProxy(tb testing.TB, mono, svc *rawBackend, extra string, service ...string) *testProxy {
	tb.Helper()
	rollout := RolloutFunc(func(r *http.Request, _ *Route) Decision {
		id := r.Header.Get("X-User-ID")
		for _, s := range service {
			if id == s {
				return Decision{Backend: BackendService, Reason: "included"}
			}
		}
		return Decision{Backend: BackendMonolith, Reason: "excluded"}
	})
	return newTestProxy(tb, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s}
identity:
  - header: X-User-ID
  - jwt: {header: Authorization, claim: sub, hs256_secret_env: JWT_SECRET}
routes: [{prefix: /api/users, service: users, flag: users-migration}]
%s`, mono.URL(), svc.URL(), extra), func(o *Options) { o.Rollout = rollout })
}

// headersOf returns the header lines of the requests in raw, lower-cased
// name first, as "name: value".
func headersOf(raw string) []string {
	var out []string
	for _, line := range strings.Split(raw, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, " ") {
			out = append(out, strings.ToLower(name)+":"+value)
		}
	}
	return out
}

func hasHeader(raw, name string) (string, bool) {
	for _, h := range headersOf(raw) {
		if n, v, _ := strings.Cut(h, ":"); n == strings.ToLower(name) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// TestRepeatedIdentityHeaderIsRefused pins issue 16: with two X-User-ID
// headers the rollout decided on the first and both were forwarded, so a
// backend reading the last acted for another user. Such a request is
// refused with 400, on every route and off them, and no upstream sees it.
func TestRepeatedIdentityHeaderIsRefused(t *testing.T) {
	mono, svc := newRawBackend(t, nil), newRawBackend(t, nil)
	tp := identityProxy(t, mono, svc, "", "alice")
	cases := []struct{ name, head string }{
		{"two lines", "X-User-ID: alice\r\nX-User-ID: bob\r\n"},
		{"two spellings", "X-User-ID: alice\r\nx-user-id: bob\r\n"},
		{"two tokens", "Authorization: Bearer a.b.c\r\nAuthorization: Bearer d.e.f\r\n"},
	}
	for _, c := range cases {
		for _, path := range []string{"/api/users/1", "/orders/1"} {
			got := sendRaw(t, tp.addr(), "GET", "GET "+path+" HTTP/1.1\r\nHost: shop.example\r\n"+c.head+"\r\n")
			if got.status != 400 {
				t.Errorf("%s, %s: got %d (%v), want 400", c.name, path, got.status, got.err)
			}
		}
	}
	if got := mono.received() + svc.received(); got != "" {
		t.Errorf("upstreams received %q, want nothing", got)
	}
	// One of them passes.
	if got := sendRaw(t, tp.addr(), "GET", "GET /api/users/1 HTTP/1.1\r\nHost: shop.example\r\nX-User-ID: alice\r\n\r\n"); got.status != 200 {
		t.Errorf("one X-User-ID: got %d, want 200", got.status)
	}
	if v, _ := hasHeader(svc.received(), "X-User-ID"); v != "alice" {
		t.Errorf("service got X-User-ID %q, want alice", v)
	}
}

// TestConnectionCannotStripIdentity pins issue 16: "Connection: X-User-ID"
// made the proxy drop the header as hop-by-hop after the rollout had
// decided on it, so the service got a request without the identity it was
// chosen for. The service gets exactly the identity the decision read;
// other headers named in Connection are still dropped (RFC 9110, 7.6.1).
func TestConnectionCannotStripIdentity(t *testing.T) {
	mono, svc := newRawBackend(t, nil), newRawBackend(t, nil)
	tp := identityProxy(t, mono, svc, "", "alice")
	cases := []struct {
		name, head, header, want string
	}{
		{"X-User-ID", "X-User-ID: alice\r\nConnection: X-User-ID\r\n", "X-User-ID", "alice"},
		{"among others", "X-User-ID: alice\r\nConnection: keep-alive, x-user-id, X-Other\r\nX-Other: 1\r\n", "X-User-ID", "alice"},
		{"Authorization", "X-User-ID: alice\r\nAuthorization: Bearer a.b.c\r\nConnection: Authorization\r\n", "Authorization", "Bearer a.b.c"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(svc.received())
			got := sendRaw(t, tp.addr(), "GET", "GET /api/users/1 HTTP/1.1\r\nHost: shop.example\r\n"+c.head+"\r\n")
			if got.status != 200 || got.body != "GET /api/users/1" {
				t.Fatalf("got %d %q, want 200 from the service", got.status, got.body)
			}
			raw := svc.received()[before:]
			if v, ok := hasHeader(raw, c.header); !ok || v != c.want {
				t.Errorf("service got %s %q (present %t), want %q:\n%s", c.header, v, ok, c.want, raw)
			}
			if _, ok := hasHeader(raw, "X-Other"); ok {
				t.Errorf("service got X-Other, which Connection named:\n%s", raw)
			}
			if _, ok := hasHeader(raw, "Connection"); ok {
				t.Errorf("service got the client's Connection header:\n%s", raw)
			}
		})
	}
}

// TestUnderscoreHeadersDropped pins issue 16: CGI, WSGI and PHP backends
// read X_User_ID as X-User-ID, so a client could pass an identity the
// rollout never saw. Headers with '_' in their name are dropped, unless
// server.underscores_in_headers keeps them.
func TestUnderscoreHeadersDropped(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("underscores_in_headers=%t", keep), func(t *testing.T) {
			mono, svc := newRawBackend(t, nil), newRawBackend(t, nil)
			tp := identityProxy(t, mono, svc, fmt.Sprintf("server: {underscores_in_headers: %t}\n", keep), "alice")
			got := sendRaw(t, tp.addr(), "GET", "GET /orders/1 HTTP/1.1\r\nHost: shop.example\r\nX_User_ID: alice\r\nX-Trace_Id: 7\r\nX-Kept: yes\r\n\r\n")
			if got.status != 200 || got.body != "GET /orders/1" {
				t.Fatalf("got %d %q, want 200 from the monolith", got.status, got.body)
			}
			raw := mono.received()
			for _, name := range []string{"X_User_ID", "X-Trace_Id"} {
				if _, ok := hasHeader(raw, name); ok != keep {
					t.Errorf("monolith got %s: %t, want %t:\n%s", name, ok, keep, raw)
				}
			}
			if v, _ := hasHeader(raw, "X-Kept"); v != "yes" {
				t.Errorf("monolith got X-Kept %q, want yes", v)
			}
		})
	}
}
