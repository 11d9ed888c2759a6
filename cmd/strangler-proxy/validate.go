package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/proxyserver"
	"github.com/strangler-fig/strangler/internal/toggles"
)

// ValidateOptions are the validate command's inputs.
type ValidateOptions struct {
	Streams    Streams
	ConfigPath string
	// Getenv reads the secrets the identity sources name. Nil means
	// os.Getenv.
	Getenv func(string) string
}

// NewCmdValidate builds "strangler-proxy validate". runF replaces
// validateRun in tests; nil means validateRun.
func NewCmdValidate(streams Streams, runF func(context.Context, *ValidateOptions) error) *cobra.Command {
	opts := &ValidateOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration file and list every problem",
		Long: `validate reads the configuration file strictly (an unknown key is an error) and
checks it, then the flags file it names, if that exists. It exits 0 when both
are valid, else 1 after printing every problem with its field path and line.
The identity sources are checked as serve checks them: a JWT source whose
secret variable is empty or unset, or whose key file cannot be read, is an
error. A route whose flag is not in the flags file is reported as a warning:
its requests go to the monolith until the flag is added.`,
		Example: `  strangler-proxy validate --config strangler.yaml
  STRANGLER_CONFIG=/etc/strangler.yaml strangler-proxy validate`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return validateRun(cmd.Context(), opts)
		},
	}
	addConfigFlag(cmd, &opts.ConfigPath)
	return cmd
}

func validateRun(_ context.Context, opts *ValidateOptions) error {
	cfg, err := proxyconfig.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	// serve refuses to start without the secrets and keys the identity
	// sources name, so validate reads them too.
	if _, err := toggles.NewResolver(toggles.ResolverConfig{
		Sources: proxyserver.IdentitySources(cfg), Anonymous: toggles.AnonymousMode(cfg.Anonymous),
		BaseDir: cfg.Dir(), Getenv: opts.Getenv,
	}); err != nil {
		return fmt.Errorf("%s: %w", opts.ConfigPath, err)
	}
	fmt.Fprintf(opts.Streams.Out, "%s: valid (%d services, %d routes)\n", opts.ConfigPath, len(cfg.Services), len(cfg.Routes))
	path := cfg.FlagsPath()
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(opts.Streams.Out, "%s: does not exist yet: every flagged route goes to the monolith\n", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read flags file: %w", err)
	}
	flags, err := toggles.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(opts.Streams.Out, "%s: valid (%d flags)\n", path, len(flags.Flags))
	for i, r := range cfg.Routes {
		if _, ok := flags.Flags[r.Flag]; r.Flag != "" && !ok {
			fmt.Fprintf(opts.Streams.Out, "warning: routes[%d].flag: %q is not in %s: the route's requests go to the monolith\n", i, r.Flag, path)
		}
	}
	return nil
}
