package routing

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httputil"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestSetForwardedMatchesSetXForwarded pins that the proxy's own
// X-Forwarded-* code gives what copying the client's X-Forwarded-For and
// calling httputil's SetXForwarded gives.
func TestSetForwardedMatchesSetXForwarded(t *testing.T) {
	cases := []struct {
		name, remote, host string
		xff                []string
		tls                bool
	}{
		{"plain", "192.0.2.1:40000", "shop.example", nil, false},
		{"chain", "192.0.2.1:40000", "shop.example", []string{"203.0.113.9"}, false},
		{"two chains", "[2001:db8::1]:443", "shop.example:8443", []string{"203.0.113.9", "198.51.100.7, 10.0.0.1"}, true},
		{"no port", "192.0.2.1", "shop.example", []string{"203.0.113.9"}, false},
		{"empty host", "192.0.2.1:1", "", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &http.Request{RemoteAddr: c.remote, Host: c.host, Header: http.Header{"Accept": {"*/*"}}}
			if c.xff != nil {
				in.Header["X-Forwarded-For"] = c.xff
			}
			if c.tls {
				in.TLS = &tls.ConnectionState{}
			}
			// What Rewrite starts from: the client's header without
			// the forwarding ones.
			start := func() http.Header {
				h := in.Header.Clone()
				delete(h, "X-Forwarded-For")
				return h
			}
			want := &http.Request{Header: start()}
			if xff, ok := in.Header["X-Forwarded-For"]; ok {
				want.Header["X-Forwarded-For"] = xff
			}
			(&httputil.ProxyRequest{In: in, Out: want}).SetXForwarded()

			got := start()
			(&exchange{}).setForwarded(in, got)
			if !reflect.DeepEqual(got, want.Header) {
				t.Errorf("header:\n got %v\nwant %v", got, want.Header)
			}
		})
	}
}

// TestSetForwardedValuesDoNotOverlap pins that appending to one forwarding
// header cannot change another: they share one backing array.
func TestSetForwardedValuesDoNotOverlap(t *testing.T) {
	in := &http.Request{RemoteAddr: "192.0.2.1:40000", Host: "shop.example", Header: http.Header{}}
	h := http.Header{}
	(&exchange{}).setForwarded(in, h)
	h.Add("X-Forwarded-For", "extra")
	h.Add("X-Forwarded-Host", "extra")
	if got := h["X-Forwarded-Host"]; !slices.Equal(got, []string{"shop.example", "extra"}) {
		t.Errorf("X-Forwarded-Host: got %q", got)
	}
	if got := h["X-Forwarded-Proto"]; !slices.Equal(got, []string{"http"}) {
		t.Errorf("X-Forwarded-Proto: got %q, want [http]", got)
	}
}

// TestMoveHeaderMatchesCopy pins that moving the answer's header and letting
// ReverseProxy copy what is left gives the client the header a plain copy
// (ReverseProxy's, value by value with Add) gives, and that an event stream's
// Content-Type stays readable in the answer (ReverseProxy reads it there to
// flush the stream as it comes) while any other is moved.
func TestMoveHeaderMatchesCopy(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		stays       bool
	}{
		{"text/event-stream", true},
		{" Text/Event-Stream; charset=utf-8", true},
		{"application/json", false},
		{"text/plain; charset=utf-8", false},
	} {
		answer := func() http.Header {
			return http.Header{
				"Content-Type":   {tc.contentType},
				"Content-Length": {"12"},
				"Set-Cookie":     {"a=1", "b=2"},
				"X-Empty":        {},
				"X-Several":      {"1", "2", "3"},
				"x-odd-case":     {"v"},
			}
		}
		client := func() http.Header { return http.Header{"Set-Cookie": {"uid=v-1"}} }

		want := client()
		for k, vv := range answer() {
			for _, v := range vv {
				want.Add(k, v)
			}
		}

		got, src := client(), answer()
		moveHeader(got, src)
		if ct, ok := src["Content-Type"]; ok != tc.stays {
			t.Errorf("Content-Type %q: left in the answer: %v (%q), want %v", tc.contentType, ok, ct, tc.stays)
		}
		for k, vv := range src { // what ReverseProxy does next
			for _, v := range vv {
				got.Add(k, v)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Content-Type %q: client header:\n got %v\nwant %v", tc.contentType, got, want)
		}
	}
}

// TestCookieAndAnswerHeaders pins, end to end, that a rollout's cookie and
// the service's own Set-Cookie lines and headers all reach the client.
func TestCookieAndAnswerHeaders(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	users := newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "svc=1")
		w.Header().Add("Set-Cookie", "svc=2")
		w.Header().Add("X-Several", "1")
		w.Header().Add("X-Several", "2")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	})
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, ""), func(o *Options) {
		o.Rollout = RolloutFunc(func(r *http.Request, route *Route) Decision {
			return Decision{Backend: BackendService, Reason: "beta", SetCookie: &http.Cookie{Name: "uid", Value: "v-1"}}
		})
	})
	resp, err := tp.srv.Client().Get(tp.srv.URL + "/api/users/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	checks := []struct {
		name string
		got  []string
		want []string
	}{
		{"Set-Cookie", resp.Header["Set-Cookie"], []string{"uid=v-1", "svc=1", "svc=2"}},
		{"X-Several", resp.Header["X-Several"], []string{"1", "2"}},
		{"Content-Type", resp.Header["Content-Type"], []string{"application/json"}},
		{"X-Served-By", resp.Header["X-Served-By"], []string{"users"}},
	}
	for _, c := range checks {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

// TestExchangeContext pins that the exchange, as the request's context, is
// found by exchangeOf and passes on the client's values and cancellation.
func TestExchangeContext(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	ex := &exchange{Context: parent}
	var ctx context.Context = ex
	if exchangeOf(ctx) != ex {
		t.Fatal("exchangeOf: did not find the exchange")
	}
	child, stop := context.WithCancel(ctx)
	defer stop()
	if exchangeOf(child) != ex {
		t.Error("exchangeOf(child): did not find the exchange")
	}
	if got := child.Value(key{}); got != "v" {
		t.Errorf("client's value: got %v, want v", got)
	}
	ran := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ran) })
	cancel()
	<-child.Done() // blocks forever if cancellation does not pass
	<-ran
	if exchangeOf(context.Background()) != nil {
		t.Error("exchangeOf(Background): got an exchange, want nil")
	}
}

// TestRequestIDs pins the generated request id's form and that it differs
// from request to request.
func TestRequestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := (&exchange{}).newRequestID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q: want 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("id %q: seen twice", id)
		}
		seen[id] = true
	}
}

// TestBufferPool pins that the pool lends 32 KiB buffers, takes back only
// those, and that what it lends back is a whole buffer.
func TestBufferPool(t *testing.T) {
	p := newBufferPool()
	b := p.Get()
	if len(b) != copyBufferSize {
		t.Fatalf("Get: got %d bytes, want %d", len(b), copyBufferSize)
	}
	p.Put(b[:10])
	p.Put(make([]byte, 100))
	for range 10 {
		if b := p.Get(); len(b) != copyBufferSize {
			t.Fatalf("Get after Put: got %d bytes, want %d", len(b), copyBufferSize)
		}
	}
}
