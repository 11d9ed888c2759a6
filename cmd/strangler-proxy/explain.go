package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/proxyserver"
	"github.com/strangler-fig/strangler/internal/ramp"
	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/toggles"
)

// ExplainOptions are the explain command's inputs.
type ExplainOptions struct {
	Streams    Streams
	ConfigPath string
	User       string
	Headers    []string // K=V
	Method     string
	Path       string
}

// NewCmdExplain builds "strangler-proxy explain". runF replaces explainRun
// in tests; nil means explainRun.
func NewCmdExplain(streams Streams, runF func(context.Context, *ExplainOptions) error) *cobra.Command {
	opts := &ExplainOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "explain [--user ID] [--header K=V]... METHOD PATH",
		Short: "Say where a request would go, and why",
		Long: `explain reads the configuration and its flags file and prints, for one request,
the route it matches, the route's flag, the user's bucket and whether the
service or the monolith would get it, with the rule that decided. It does not
talk to a running proxy.

Without --user, the user id comes from the configured identity sources, fed
with the --header values.`,
		Example: `  strangler-proxy explain --config strangler.yaml --user u-42 GET /api/users/7
  strangler-proxy explain -c strangler.yaml --header X-User-ID=u-42 --header X-Beta-Tester=true POST /api/users`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("%w: explain takes METHOD and PATH, got %d arguments (see %s --help)", errUsage, len(args), cmd.CommandPath())
			}
			opts.Method, opts.Path = strings.ToUpper(args[0]), args[1]
			if !strings.HasPrefix(opts.Path, "/") {
				return fmt.Errorf("%w: PATH %q must start with /", errUsage, opts.Path)
			}
			for _, h := range opts.Headers {
				if k, _, ok := strings.Cut(h, "="); !ok || k == "" {
					return fmt.Errorf("%w: --header %q: write it as Name=value", errUsage, h)
				}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return explainRun(cmd.Context(), opts)
		},
	}
	addConfigFlag(cmd, &opts.ConfigPath)
	cmd.Flags().StringVar(&opts.User, "user", "", "the user id (default: from the identity sources and --header)")
	cmd.Flags().StringArrayVar(&opts.Headers, "header", nil, "a request header, Name=value (repeatable)")
	return cmd
}

func explainRun(_ context.Context, opts *ExplainOptions) error {
	cfg, err := proxyconfig.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(opts.Method, "http://strangler"+opts.Path, nil)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	for _, h := range opts.Headers {
		k, v, _ := strings.Cut(h, "=")
		req.Header.Add(k, v)
	}
	out := opts.Streams.Out
	fmt.Fprintf(out, "request:  %s %s\n", opts.Method, req.URL.Path)
	route := routing.TableOf(cfg).Match(routing.MatchPath(req.URL.Path))
	switch {
	case route == nil:
		fmt.Fprintf(out, "route:    none\ndecision: monolith (no route matches)\n")
		return nil
	case !route.AllowsMethod(opts.Method):
		fmt.Fprintf(out, "route:    %s (service %s)\ndecision: monolith (%s is not in the route's methods)\n", route.Label, route.Service, opts.Method)
		return nil
	}
	fmt.Fprintf(out, "route:    %s (service %s)\n", route.Label, route.Service)
	if route.Flag == "" {
		fmt.Fprintf(out, "flag:     none\ndecision: service (the route has no flag)\n")
		return nil
	}
	fmt.Fprintf(out, "flag:     %s\n", route.Flag)
	if cfg.FlagsStore != nil {
		// Fleet mode: the flags in force are in PostgreSQL, not in a file
		// explain could read.
		fmt.Fprintf(out, "decision: not evaluated (the flags are in flags_store: see `strangler-proxy rollout get %s` against a replica)\n", route.Flag)
		return nil
	}
	if cfg.FlagsFile == "" {
		fmt.Fprintf(out, "decision: monolith (no flags_file: the flag cannot be evaluated)\n")
		return nil
	}
	id := toggles.Identity{UserID: opts.User}
	if id.UserID == "" {
		resolver, err := toggles.NewResolver(toggles.ResolverConfig{
			Sources: proxyserver.IdentitySources(cfg), BaseDir: cfg.Dir(),
			// An anonymous visitor has no id yet; a sticky cookie would be
			// a new random one, so explain reports no user.
			Anonymous: toggles.AnonymousMonolith,
		})
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		id = resolver.Resolve(req)
	}
	store, err := toggles.OpenStore(cfg.FlagsPath(), toggles.StoreOptions{})
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	res := store.Snapshot().EvaluateFor(route.Flag, id, req.Header)
	user := id.UserID
	if user == "" {
		user = "none"
	}
	if res.Rule == toggles.RuleSplit || res.Rule == toggles.RuleNotEligible {
		fmt.Fprintf(out, "user:     %s (bucket %d of %d)\n", user, res.Bucket, toggles.BucketCount)
	} else {
		fmt.Fprintf(out, "user:     %s\n", user)
	}
	backend := "monolith"
	if res.Service {
		backend = "service"
	}
	fmt.Fprintf(out, "decision: %s (%s: %s)\n", backend, res.Rule, res.Explain())
	return explainGuardRamp(out, cfg.FlagsPath(), route.Flag, store.Snapshot())
}

// explainGuardRamp prints the flag's guard and ramp as the flags file sets
// them, and the ramp's shared state: a guard trip stops the ramp with the
// trip's reason, so a trip shows there.
func explainGuardRamp(out io.Writer, flagsFile, flag string, snap *toggles.Snapshot) error {
	fl, ok := snap.Flag(flag)
	if !ok {
		return nil
	}
	if g := fl.Guard; g != nil {
		fmt.Fprintf(out, "guard:    %s\n", g)
	}
	if r := fl.Ramp; r != nil {
		fmt.Fprintf(out, "ramp:     steps %v every %s\n", r.Steps, r.Interval)
	}
	st, ok, err := ramp.ReadState(flagsFile, flag)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	if ok {
		fmt.Fprintf(out, "state:    ramp %s\n", st)
	}
	return nil
}
