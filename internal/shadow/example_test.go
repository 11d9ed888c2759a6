package shadow_test

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/strangler-fig/strangler/internal/shadow"
)

type captureKey struct{}

// ExampleShadower_Begin shows how a reverse proxy hands a monolith-bound
// request and the monolith's answer to the shadower without waiting on the
// service.
func ExampleShadower_Begin() {
	monolith, _ := url.Parse("http://127.0.0.1:8000")
	service, _ := url.Parse("http://127.0.0.1:8002")
	s, err := shadow.New(shadow.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	s.Configure([]shadow.Route{{
		Name:    "products",
		Config:  shadow.Config{Percentage: 100, IgnoreJSONPaths: []string{"$.updated_at"}, NoiseCheck: true},
		Service: service, Monolith: monolith,
	}})
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(monolith) // the rollout sent this request to the monolith
			if c := s.Begin("products", pr.In); c != nil {
				pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), captureKey{}, c))
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if c, ok := resp.Request.Context().Value(captureKey{}).(*shadow.Capture); ok {
				c.WrapResponse(resp) // tees the body; submits when the proxy closes it
			}
			return nil
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/", proxy)
	mux.Handle("GET /admin/shadow/mismatches", s.Handler())
	_ = mux
}
