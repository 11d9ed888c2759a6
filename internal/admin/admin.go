// Package admin is strangler-proxy's admin listener: /healthz, /readyz,
// /metrics and the /admin JSON API.
//
// Reads are open (the listener binds to 127.0.0.1 by default). Writes, mounted
// with HandleWrite, need "Authorization: Bearer <token>": without it the
// answer is 401, with a wrong token 403, and when no token is configured every
// write is refused with 403. Tokens are compared in constant time.
//
// Other packages mount their endpoints on the same mux:
//
//	adm.Handle("GET /admin/flags", listFlags)
//	adm.HandleWrite("PUT /admin/flags/{key}", setFlag)
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options are the admin server's collaborators.
type Options struct {
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Ready answers /readyz; nil means always ready.
	Ready func(ctx context.Context) error
	// Logger receives refused writes and errors.
	Logger *slog.Logger
	// TokenSource names where the token comes from, for error messages (such
	// as "$STRANGLER_ADMIN_TOKEN (admin.token_env)").
	TokenSource string
}

// Server is the admin HTTP handler.
type Server struct {
	mux   *http.ServeMux
	opts  Options
	token atomic.Pointer[[sha256.Size]byte] // nil: writes refused
}

// New returns an admin server with /healthz, /readyz and /metrics mounted.
func New(opts Options) *Server {
	s := &Server{mux: http.NewServeMux(), opts: opts}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	return s
}

// SetToken sets the bearer token writes need; "" refuses every write.
func (s *Server) SetToken(token string) {
	if token == "" {
		s.token.Store(nil)
		return
	}
	sum := sha256.Sum256([]byte(token))
	s.token.Store(&sum)
}

// Handle mounts a read endpoint (no token needed). pattern is a
// http.ServeMux pattern, such as "GET /admin/flags".
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleWrite mounts an endpoint that needs the bearer token.
func (s *Server) HandleWrite(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.requireToken(h))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.opts.Ready(ctx); err != nil {
			WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// requireToken checks "Authorization: Bearer <token>" in constant time
// (comparing hashes, so that the length does not leak either).
func (s *Server) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := s.token.Load()
		if want == nil {
			s.refuse(w, r, http.StatusForbidden, "admin writes are disabled: no token is configured; set "+s.tokenSource())
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="strangler-proxy"`)
			s.refuse(w, r, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token>")
			return
		}
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.refuse(w, r, http.StatusForbidden, "wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) tokenSource() string {
	if s.opts.TokenSource != "" {
		return s.opts.TokenSource
	}
	return "admin.token_env and that environment variable"
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if s.opts.Logger != nil {
		s.opts.Logger.Warn("admin write refused", "method", r.Method, "path", r.URL.Path, "status", code, "remote", r.RemoteAddr)
	}
	WriteError(w, code, msg)
}

// WriteJSON writes v as a JSON answer with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes {"error": msg} with status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}
