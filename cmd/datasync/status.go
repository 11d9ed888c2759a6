package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// StatusOptions are the flags of datasync status.
type StatusOptions struct {
	IO     *cli.IO
	Source string
	Target string
	Config string
	Name   string
	JSON   bool
}

// NewCmdStatus builds datasync status. runF replaces statusRun in tests.
func NewCmdStatus(io *cli.IO, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a sync's lag, applied position and copied tables",
		Long: `status reads the sync's replication slot on the source (lag in bytes and seconds, wal_status)
and its checkpoints in the target (applied LSN, last apply time, copied tables).`,
		Example: `  datasync status --config datasync.yaml --name users
  datasync status --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL" --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	registerConnFlags(cmd, &opts.Source, &opts.Target, &opts.Config, &opts.Name)
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the status as JSON")
	return cmd
}

// registerConnFlags adds the connection flags status and cleanup share.
func registerConnFlags(cmd *cobra.Command, source, target, config, name *string) {
	cmd.Flags().StringVar(source, "source", "", "source (monolith) database URL (default: config file, then $"+mapping.EnvSource+")")
	cmd.Flags().StringVar(target, "target", "", "target (service) database URL (default: config file, then $"+mapping.EnvTarget+")")
	cmd.Flags().StringVar(config, "config", "", "datasync YAML config file")
	cmd.Flags().StringVar(name, "name", "datasync", "name of the sync")
}

// openPools resolves the databases like the other commands (flag, config,
// environment) and connects to both.
func openPools(ctx context.Context, io *cli.IO, source, target, config string) (src, dst *pgxpool.Pool, err error) {
	cfg := &mapping.Config{}
	if config != "" {
		if cfg, err = mapping.LoadFile(config, io.Getenv); err != nil {
			return nil, nil, err
		}
	}
	pick := func(flag, fromConfig, env, what string) (string, error) {
		for _, v := range []string{flag, fromConfig, io.Getenv(env)} {
			if v != "" {
				return v, nil
			}
		}
		return "", fmt.Errorf("no %s database: pass --%s URL, set %s in --config, or set $%s", what, what, what, env)
	}
	srcURL, err := pick(source, cfg.Source, mapping.EnvSource, "source")
	if err != nil {
		return nil, nil, err
	}
	dstURL, err := pick(target, cfg.Target, mapping.EnvTarget, "target")
	if err != nil {
		return nil, nil, err
	}
	if src, err = pgxpool.New(ctx, srcURL); err != nil {
		return nil, nil, fmt.Errorf("connect source: %w", err)
	}
	if dst, err = pgxpool.New(ctx, dstURL); err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("connect target: %w", err)
	}
	return src, dst, nil
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	src, dst, err := openPools(ctx, opts.IO, opts.Source, opts.Target, opts.Config)
	if err != nil {
		return err
	}
	defer src.Close()
	defer dst.Close()
	st, err := apply.GetStatus(ctx, src, dst, opts.Name)
	if err != nil {
		return err
	}
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := tabwriter.NewWriter(opts.IO.Out, 0, 4, 2, ' ', 0)
	slot := "missing"
	if st.SlotExists {
		slot = "inactive"
		if st.SlotActive {
			slot = "active"
		}
		slot += ", wal_status " + st.WALStatus
	}
	fmt.Fprintf(w, "sync\t%s\n", st.Name)
	fmt.Fprintf(w, "slot\t%s (%s)\n", st.Slot, slot)
	fmt.Fprintf(w, "lag\t%d bytes, %.1f s\n", st.LagBytes, st.LagSeconds)
	fmt.Fprintf(w, "source lsn\t%s\n", st.SourceLSN)
	fmt.Fprintf(w, "confirmed lsn\t%s\n", orDash(st.ConfirmedFlushLSN))
	fmt.Fprintf(w, "applied lsn\t%s\n", orDash(st.AppliedLSN))
	if st.LastApply != nil {
		fmt.Fprintf(w, "last apply\t%s\n", st.LastApply.UTC().Format("2006-01-02T15:04:05Z07:00"))
	}
	for _, t := range st.Tables {
		fmt.Fprintf(w, "table %s\tcopied %d rows at %s (%s)\n", t.Target, t.CopiedRows, t.CopiedLSN, t.CopiedAt.UTC().Format("2006-01-02T15:04:05Z07:00"))
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
