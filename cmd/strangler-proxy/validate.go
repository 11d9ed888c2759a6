package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
)

// ValidateOptions are the validate command's inputs.
type ValidateOptions struct {
	Streams    Streams
	ConfigPath string
}

// NewCmdValidate builds "strangler-proxy validate". runF replaces
// validateRun in tests; nil means validateRun.
func NewCmdValidate(streams Streams, runF func(context.Context, *ValidateOptions) error) *cobra.Command {
	opts := &ValidateOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration file and list every problem",
		Long: `validate reads the configuration file strictly (an unknown key is an error) and
checks it. It exits 0 when the file is valid, else 1 after printing every
problem with its field path and line.`,
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
	fmt.Fprintf(opts.Streams.Out, "%s: valid (%d services, %d routes)\n", opts.ConfigPath, len(cfg.Services), len(cfg.Routes))
	return nil
}
