package routing

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// recorder is an Observer that keeps what it sees.
type recorder struct {
	mu      sync.Mutex
	results []Result
}

func (rec *recorder) Observe(_ *http.Request, _ *Route, res Result) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.results = append(rec.results, res)
}

func (rec *recorder) len() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.results)
}

var _ Observer = (*recorder)(nil)

// TestRolloutSeam drives a flagged route with a custom Rollout (beta testers
// to the service, with a cookie) and checks what the Observer sees.
func TestRolloutSeam(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	users := newBackend(t, "users", nil)
	rollout := RolloutFunc(func(r *http.Request, route *Route) Decision {
		if route.Flag == "users-migration" && r.Header.Get("X-Beta") == "true" {
			return Decision{Backend: BackendService, Reason: "beta", SetCookie: &http.Cookie{Name: "uid", Value: "v-1"}}
		}
		return Decision{Backend: BackendMonolith, Reason: "not_beta"}
	})
	rec := &recorder{}
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, "    flag: users-migration\n"), func(o *Options) {
		o.Rollout, o.Observer = rollout, rec
	})
	cases := []struct {
		name        string
		header      http.Header
		wantBy      string
		wantBackend Backend
		wantCookie  string
		wantReason  string
	}{
		{"beta tester", http.Header{"X-Beta": {"true"}}, "users", BackendService, "uid=v-1", "beta"},
		{"everyone else", nil, "monolith", BackendMonolith, "", "not_beta"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tp.srv.URL+"/api/users/1", nil)
			for k, v := range c.header {
				req.Header[k] = v
			}
			resp, err := tp.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Served-By"); got != c.wantBy {
				t.Errorf("served by: got %q, want %q", got, c.wantBy)
			}
			if got := resp.Header.Get("Set-Cookie"); got != c.wantCookie {
				t.Errorf("Set-Cookie: got %q, want %q", got, c.wantCookie)
			}
			testkit.Eventually(t, 5*time.Second, "the observer to see the request", func() bool { return rec.len() == i+1 })
			rec.mu.Lock()
			res := rec.results[i]
			rec.mu.Unlock()
			if res.Decision.Reason != c.wantReason || res.Backend != c.wantBackend || res.Status != 200 {
				t.Errorf("observed %+v, want reason %s, backend %s, status 200", res, c.wantReason, c.wantBackend)
			}
		})
	}
}
