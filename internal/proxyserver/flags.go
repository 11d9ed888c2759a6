package proxyserver

import (
	"context"
	"fmt"
	"net/http"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/toggles"
)

// flagRollout is the routing.Rollout of a proxy with a flags_file: rollout
// flags evaluated by the toggles package for the request's user.
type flagRollout struct {
	tr *toggles.Rollout
}

var _ routing.Rollout = (*flagRollout)(nil)

// startFlags starts the rollout machinery for cfg: the flags store and its
// watcher, identity, the OpenFeature client and the rollout metrics.
func startFlags(ctx context.Context, cfg *proxyconfig.Config, opts Options) (*flagRollout, error) {
	tr, err := toggles.Start(ctx, toggles.Config{
		FlagsFile:  cfg.FlagsPath(),
		Identity:   IdentitySources(cfg),
		Anonymous:  toggles.AnonymousMode(cfg.Anonymous),
		BaseDir:    cfg.Dir(),
		Getenv:     opts.Getenv,
		Registerer: opts.Registry,
		Logger:     opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	return &flagRollout{tr: tr}, nil
}

// IdentitySources converts the config's identity list to the toggles type
// (the same keys, decoded by proxyconfig).
func IdentitySources(cfg *proxyconfig.Config) []toggles.IdentitySource {
	out := make([]toggles.IdentitySource, 0, len(cfg.Identity))
	for _, id := range cfg.Identity {
		s := toggles.IdentitySource{Header: id.Header, Cookie: id.Cookie}
		if j := id.JWT; j != nil {
			s.JWT = &toggles.JWTSource{Header: j.Header, Claim: j.Claim, HS256SecretEnv: j.HS256SecretEnv, RS256PublicKeyFile: j.RS256PublicKeyFile}
		}
		out = append(out, s)
	}
	return out
}

// apply takes the identity part of a reloaded configuration; an error
// rejects the reload.
func (f *flagRollout) apply(cfg *proxyconfig.Config, getenv func(string) string) error {
	return f.tr.SetIdentity(IdentitySources(cfg), toggles.AnonymousMode(cfg.Anonymous), cfg.Dir(), getenv)
}

// Decide implements routing.Rollout: a route without flag goes to its
// service; a flagged one where the flag sends this user.
func (f *flagRollout) Decide(r *http.Request, route *routing.Route) routing.Decision {
	if route.Flag == "" {
		return routing.Decision{Backend: routing.BackendService, Reason: routing.DecisionNoFlag}
	}
	d, id := f.tr.Decide(r, route.Flag)
	b := routing.BackendMonolith
	if d.Service {
		b = routing.BackendService
	}
	return routing.Decision{Backend: b, Reason: d.Reason, SetCookie: id.Cookie()}
}

// mount adds the flag endpoints to the admin API; changes need the token.
func (f *flagRollout) mount(s *Server) {
	h := f.tr.AdminHandler(toggles.AdminOptions{Logger: s.opts.Logger})
	s.admin.Handle("GET /admin/flags", h)
	s.admin.Handle("GET /admin/flags/{key}", h)
	s.admin.HandleWrite("PUT /admin/flags/{key}", h)
}

// close stops the flags watcher.
func (f *flagRollout) close(ctx context.Context) error {
	return f.tr.Close(ctx)
}
