package togglescmd

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/toggles"
)

// NewCmdFlags returns "flags" with export.
func NewCmdFlags(d Deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "flags",
		Short:   "Work with the flags file",
		Example: `  strangler-proxy flags export --format flagd --flags flags.yaml > flagd.json`,
	}
	cmd.AddCommand(NewCmdExport(d, nil))
	return cmd
}

// ExportOptions are the options of "flags export".
type ExportOptions struct {
	Deps      Deps   // streams, HTTP client, environment
	Format    string // --format: flagd
	FlagsFile string // --flags
	Output    string // --output; empty or "-": Deps.Out
}

// NewCmdExport returns "flags export --format flagd --flags FILE".
func NewCmdExport(d Deps, runF func(context.Context, *ExportOptions) error) *cobra.Command {
	opts := &ExportOptions{Deps: d}
	cmd := &cobra.Command{
		Use:   "export --format flagd --flags FILE",
		Short: "Write the flags file as a flagd flag-definition file",
		Long: `Write the flags file as a flagd flag-definition file (JSON) whose fractional
targeting, include/exclude lists and segments send every user to the same
side as strangler-proxy does, so the cohorts can move to flagd unchanged.
In flagd's evaluation context a claim segment reads the attribute of the
same name and a header segment reads headers.<Header-Name>.`,
		Example: `  strangler-proxy flags export --format flagd --flags flags.yaml -o flagd.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Format != "flagd" {
				return fmt.Errorf("--format %q: the only format is flagd", opts.Format)
			}
			if opts.FlagsFile == "" {
				return fmt.Errorf("--flags is required: the flags file to export, e.g. --flags flags.yaml")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return exportRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Format, "format", "flagd", "output format (flagd)")
	cmd.Flags().StringVar(&opts.FlagsFile, "flags", "", "flags file to export (required)")
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "write here instead of standard output")
	return cmd
}

func exportRun(_ context.Context, opts *ExportOptions) error {
	data, err := os.ReadFile(opts.FlagsFile)
	if err != nil {
		return fmt.Errorf("export flags: %w", err)
	}
	f, err := toggles.Parse(data)
	if err != nil {
		return fmt.Errorf("export flags %s: %w", opts.FlagsFile, err)
	}
	out, err := toggles.ExportFlagd(f)
	if err != nil {
		return err
	}
	if opts.Output == "" || opts.Output == "-" {
		if _, err := opts.Deps.Out.Write(out); err != nil {
			return fmt.Errorf("export flags: %w", err)
		}
		return nil
	}
	if err := os.WriteFile(opts.Output, out, 0o644); err != nil {
		return fmt.Errorf("export flags: %w", err)
	}
	return nil
}
