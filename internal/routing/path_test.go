package routing

import (
	"fmt"
	"testing"
)

// TestEscapedSlashesAndPathParams pins issue 16: "/api%2fusers/1" was
// routed on its decoded path ("/api/users/1") while the upstream got it as
// written, and "/api/users/..;/admin" went to the users service, which a
// servlet container reads as "/admin". server.escaped_slashes (Envoy's
// path_with_escaped_slashes_action) refuses escaped slashes by default or
// forwards the decoded path; a ';' parameter that would change the route is
// refused.
func TestEscapedSlashesAndPathParams(t *testing.T) {
	cases := []struct {
		name, policy, target string
		want                 int
		reaches              string // the request line an upstream gets ("" for none)
	}{
		{"escaped slash", "", "/api%2fusers/1", 400, ""},
		{"escaped slash, upper case", "", "/api%2Fusers/1", 400, ""},
		{"escaped slash off the routes", "", "/static%2Fapp.js", 400, ""},
		{"escaped backslash", "", "/api/users%5c..%5cadmin", 400, ""},
		{"escaped slash, unescape_and_forward", "unescape_and_forward", "/api%2fusers/1", 200, "users GET /api/users/1"},
		{"escaped backslash, unescape_and_forward", "unescape_and_forward", "/api/users%5C1", 400, ""},
		{"other escapes pass as written", "", "/api/us%65rs/1", 200, "users GET /api/us%65rs/1"},
		{"dot-dot segment with a parameter", "", "/api/users/..;/admin", 400, ""},
		{"escaped dot-dot with a parameter", "", "/api/users/%2e%2e;/admin", 400, ""},
		{"dot segment with a parameter", "", "/api/users/.;x/1", 400, ""},
		{"a parameter hiding a route's prefix", "", "/api/users;x/1", 400, ""},
		{"a parameter on the last segment", "", "/api/users/1;jsessionid=a1", 200, "users GET /api/users/1;jsessionid=a1"},
		{"a parameter off the routes", "", "/orders;v=2/1", 200, "monolith GET /orders;v=2/1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mono, svc := newRawBackend(t, nil), newRawBackend(t, nil)
			extra := ""
			if c.policy != "" {
				extra = "server: {escaped_slashes: " + c.policy + "}\n"
			}
			tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s}
routes: [{prefix: /api/users, service: users}]
%s`, mono.URL(), svc.URL(), extra))
			got := sendRaw(t, tp.addr(), "GET", "GET "+c.target+" HTTP/1.1\r\nHost: shop.example\r\n\r\n")
			if got.status != c.want {
				t.Fatalf("got %d %q (%v), want %d", got.status, got.body, got.err, c.want)
			}
			var reached []string
			for _, r := range mono.requests() {
				reached = append(reached, "monolith "+r)
			}
			for _, r := range svc.requests() {
				reached = append(reached, "users "+r)
			}
			switch {
			case c.reaches == "" && len(reached) > 0:
				t.Errorf("upstreams received %q, want nothing", reached)
			case c.reaches != "" && (len(reached) != 1 || reached[0] != c.reaches):
				t.Errorf("upstreams received %q, want [%q]", reached, c.reaches)
			}
		})
	}
}
