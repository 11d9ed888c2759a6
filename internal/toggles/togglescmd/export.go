package togglescmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/toggles"
)

// NewCmdFlags returns "flags" with export.
func NewCmdFlags(d Deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flags",
		Short: "Work with the flags file and the shared flags store",
		Example: `  strangler-proxy flags export --format flagd --flags flags.yaml > flagd.json
  strangler-proxy flags export --store "$STRANGLER_FLAGS_DATABASE_URL" -o flags.yaml
  strangler-proxy flags import --store "$STRANGLER_FLAGS_DATABASE_URL" --flags flags.yaml`,
	}
	cmd.AddCommand(NewCmdExport(d, nil), NewCmdImport(d, nil))
	return cmd
}

// ExportOptions are the options of "flags export".
type ExportOptions struct {
	Deps      Deps   // streams, HTTP client, environment
	Format    string // --format: flagd
	FlagsFile string // --flags
	Store     string // --store: read the shared flags store instead
	Output    string // --output; empty or "-": Deps.Out
}

// NewCmdExport returns "flags export --format flagd --flags FILE".
func NewCmdExport(d Deps, runF func(context.Context, *ExportOptions) error) *cobra.Command {
	opts := &ExportOptions{Deps: d}
	cmd := &cobra.Command{
		Use:   "export (--format flagd --flags FILE | --store URL)",
		Short: "Write the flags file as a flagd flag-definition file, or the shared store's flags as a flags file",
		Long: `Write the flags file as a flagd flag-definition file (JSON) whose fractional
targeting, include/exclude lists and segments send every user to the same
side as strangler-proxy does, so the cohorts can move to flagd unchanged.
In flagd's evaluation context a claim segment reads the attribute of the
same name and a header segment reads headers.<Header-Name>.

With --store (a PostgreSQL URL; "env" reads $STRANGLER_FLAGS_DATABASE_URL),
the flags of the shared store of fleet mode are written instead, as a
flags file (--format flags, the default then) or for flagd.`,
		Example: `  strangler-proxy flags export --format flagd --flags flags.yaml -o flagd.json
  strangler-proxy flags export --store env -o flags.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Store != "" {
				if !cmd.Flags().Changed("format") {
					opts.Format = "flags"
				}
				if opts.Format != "flags" && opts.Format != "flagd" {
					return fmt.Errorf("--format %q: with --store the formats are flags and flagd", opts.Format)
				}
				if opts.FlagsFile != "" {
					return fmt.Errorf("--flags and --store: give one source")
				}
				if runF != nil {
					return runF(cmd.Context(), opts)
				}
				return exportRun(cmd.Context(), opts)
			}
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
	cmd.Flags().StringVar(&opts.FlagsFile, "flags", "", "flags file to export (required without --store)")
	cmd.Flags().StringVar(&opts.Store, "store", "", `shared flags store to export: a PostgreSQL URL, or "env" for $STRANGLER_FLAGS_DATABASE_URL`)
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "write here instead of standard output")
	return cmd
}

func exportRun(ctx context.Context, opts *ExportOptions) error {
	var data []byte
	var err error
	source := opts.FlagsFile
	if opts.Store != "" {
		url, uerr := storeURL(opts.Deps, opts.Store)
		if uerr != nil {
			return uerr
		}
		var rev int64
		rev, data, err = toggles.ExportFlags(ctx, url)
		if err != nil {
			return err
		}
		source = fmt.Sprintf("the store (revision %d)", rev)
		fmt.Fprintf(opts.Deps.ErrOut, "exported revision %d of the flags store\n", rev)
	} else if data, err = os.ReadFile(opts.FlagsFile); err != nil {
		return fmt.Errorf("export flags: %w", err)
	}
	f, err := toggles.Parse(data)
	if err != nil {
		return fmt.Errorf("export flags %s: %w", source, err)
	}
	var out []byte
	if opts.Format == "flags" {
		var buf bytes.Buffer
		if err := f.Encode(&buf); err != nil {
			return err
		}
		out = buf.Bytes()
	} else if out, err = toggles.ExportFlagd(f); err != nil {
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

// storeURL is --store: a PostgreSQL URL, or "env" for
// $STRANGLER_FLAGS_DATABASE_URL. It is never printed (it may hold a
// password).
func storeURL(d Deps, flag string) (string, error) {
	if flag == "env" {
		u := d.getenv("STRANGLER_FLAGS_DATABASE_URL")
		if u == "" {
			return "", errors.New("--store env: $STRANGLER_FLAGS_DATABASE_URL is not set: export it with the PostgreSQL URL of the flags store")
		}
		return u, nil
	}
	if !strings.HasPrefix(flag, "postgres://") && !strings.HasPrefix(flag, "postgresql://") {
		return "", errors.New(`--store: want a postgres:// URL, or "env" for $STRANGLER_FLAGS_DATABASE_URL`)
	}
	return flag, nil
}

// ImportOptions are the options of "flags import".
type ImportOptions struct {
	Deps       Deps   // streams, environment
	FlagsFile  string // --flags
	Store      string // --store
	IfRevision int64  // --if-revision
}

// NewCmdImport returns "flags import --store URL --flags FILE".
func NewCmdImport(d Deps, runF func(context.Context, *ImportOptions) error) *cobra.Command {
	opts := &ImportOptions{Deps: d}
	cmd := &cobra.Command{
		Use:   "import --store URL --flags FILE",
		Short: "Replace the shared flags store's flags with a flags file",
		Long: `Replace the flags of the shared store of fleet mode with a flags file, as one
new revision: the file is validated first, every flag that changes gets an
audit row, and every replica serves the new flags within about a second.
The store's schema is created when missing.`,
		Example: `  strangler-proxy flags import --store env --flags flags.yaml
  strangler-proxy flags import --store env --flags flags.yaml --if-revision 42`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.FlagsFile == "" {
				return errors.New("--flags is required: the flags file to import, e.g. --flags flags.yaml")
			}
			if opts.Store == "" {
				return errors.New(`--store is required: the flags store's PostgreSQL URL, or "env" for $STRANGLER_FLAGS_DATABASE_URL`)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return importRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.FlagsFile, "flags", "", "flags file to import (required)")
	cmd.Flags().StringVar(&opts.Store, "store", "", `flags store: a PostgreSQL URL, or "env" for $STRANGLER_FLAGS_DATABASE_URL (required)`)
	cmd.Flags().Int64Var(&opts.IfRevision, "if-revision", 0, "refuse unless the store is at this revision (see flags export)")
	return cmd
}

func importRun(ctx context.Context, opts *ImportOptions) error {
	url, err := storeURL(opts.Deps, opts.Store)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(opts.FlagsFile)
	if err != nil {
		return fmt.Errorf("import flags: %w", err)
	}
	rev, err := toggles.ImportFlags(ctx, url, data, "flags import "+opts.FlagsFile, opts.IfRevision)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.FlagsFile, err)
	}
	fmt.Fprintf(opts.Deps.Out, "imported %s into the flags store as revision %d\n", opts.FlagsFile, rev)
	return nil
}
