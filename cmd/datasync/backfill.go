package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/progress"
)

// backfillOptions are the flags of datasync backfill.
type backfillOptions struct {
	IO      *cli.IO
	Mapping mapping.Flags

	BatchSize        int
	Workers          int
	MaxRowsPerSecond float64
	Restart          bool
}

func newCmdBackfill(io *cli.IO) *cobra.Command {
	opts := &backfillOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Copy every row of the mapped tables from the source to the target, resumably",
		Long: `backfill copies every row of each mapped table from the source database to the target
database, in batches that follow the key (keyset pagination, never OFFSET).

Before writing anything it checks every mapping against both databases (tables, key,
unique indexes, columns and types) and stops with exit code 2, listing every problem.

Each batch commits together with a checkpoint in the target's datasync.backfill_progress
table, so a run that is killed resumes after its last committed batch, and a table that
was copied completely is skipped. Rows are written idempotently: where the target
already holds a key, the row is upserted, and left untouched if it is already equal.

Progress goes to stderr: a bar when it is a terminal, JSON lines otherwise. The summary
(rows, seconds, rows/s) goes to stdout.`,
		Example: `  # One table with the same name on both sides
  datasync backfill --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL" --table users

  # Rename on the way, four parallel key ranges, at most 20000 rows/s
  datasync backfill --table products:catalog_items --workers 4 --max-rows-per-second 20000

  # Tables, column renames and row filters from a config file
  datasync backfill --config datasync.yaml

  # Forget the checkpoints and copy everything again
  datasync backfill --config datasync.yaml --restart`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.BatchSize < 1 {
				return &cli.ExitError{Code: exitError, Err: fmt.Errorf("--batch-size %d: want 1 or more", opts.BatchSize)}
			}
			if opts.Workers < 1 {
				return &cli.ExitError{Code: exitError, Err: fmt.Errorf("--workers %d: want 1 or more", opts.Workers)}
			}
			if opts.MaxRowsPerSecond < 0 {
				return &cli.ExitError{Code: exitError, Err: fmt.Errorf("--max-rows-per-second %g: want 0 (no limit) or more", opts.MaxRowsPerSecond)}
			}
			return backfillRun(cmd.Context(), opts)
		},
	}
	opts.Mapping.Register(cmd.Flags())
	cmd.Flags().IntVar(&opts.BatchSize, "batch-size", backfill.DefaultBatchSize, "rows per batch; each batch commits with its checkpoint")
	cmd.Flags().IntVar(&opts.Workers, "workers", 1, "key ranges copied in parallel")
	cmd.Flags().Float64Var(&opts.MaxRowsPerSecond, "max-rows-per-second", 0, "cap on the copy rate over all workers (0: no cap)")
	cmd.Flags().BoolVar(&opts.Restart, "restart", false, "forget the checkpoints and copy every table again")
	return cmd
}

func backfillRun(ctx context.Context, opts *backfillOptions) error {
	io := opts.IO
	cfg, err := opts.Mapping.Load(io.Getenv)
	if err != nil {
		return &cli.ExitError{Code: exitError, Err: err}
	}
	src, err := openPool(ctx, "source", cfg.Source, opts.Workers)
	if err != nil {
		return &cli.ExitError{Code: exitError, Err: err}
	}
	defer src.Close()
	dst, err := openPool(ctx, "target", cfg.Target, opts.Workers)
	if err != nil {
		return &cli.ExitError{Code: exitError, Err: err}
	}
	defer dst.Close()

	tables, err := mapping.ResolveAll(ctx, src, dst, cfg.Tables)
	if err != nil {
		return &cli.ExitError{Code: exitError, Err: fmt.Errorf("preflight, nothing was written: %w", err)}
	}

	// Off a terminal every line on stderr is JSON: the log as well as the
	// progress lines.
	var logs slog.Handler = slog.NewJSONHandler(io.ErrOut, nil)
	if io.ErrIsTerminal {
		logs = slog.NewTextHandler(io.ErrOut, nil)
	}
	sum, err := backfill.Run(ctx, backfill.Options{
		Source:           src,
		Target:           dst,
		BatchSize:        opts.BatchSize,
		Workers:          opts.Workers,
		MaxRowsPerSecond: opts.MaxRowsPerSecond,
		Restart:          opts.Restart,
		Progress:         progress.Options{Out: io.ErrOut, Terminal: io.ErrIsTerminal},
		Logger:           slog.New(logs),
	}, tables)
	printSummary(io, sum)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return &cli.ExitError{Code: exitError, Err: errors.New("interrupted: run the same command again to resume from the last checkpoint")}
	}
	if err != nil {
		return &cli.ExitError{Code: exitError, Err: fmt.Errorf("backfill: %w (run the same command again to resume)", err)}
	}
	return nil
}

func printSummary(io *cli.IO, sum backfill.Summary) {
	for _, t := range sum.Tables {
		name := t.Source.String()
		if t.Target != t.Source {
			name += " → " + t.Target.String()
		}
		if t.Skipped {
			fmt.Fprintf(io.Out, "%s: already backfilled (%d rows), skipped; --restart copies it again\n", name, t.TotalRows)
			continue
		}
		rate := 0.0
		if t.Seconds > 0 {
			rate = float64(t.Rows) / t.Seconds
		}
		resumed := ""
		if t.Resumed {
			resumed = fmt.Sprintf(", resumed: %d rows in all", t.TotalRows)
		}
		fmt.Fprintf(io.Out, "%s: %d rows in %.1fs (%.0f rows/s), %d %s%s\n",
			name, t.Rows, t.Seconds, rate, t.Ranges, plural(t.Ranges, "range", "ranges"), resumed)
	}
	if len(sum.Tables) > 1 {
		fmt.Fprintf(io.Out, "total: %d rows in %.1fs (%.0f rows/s)\n", sum.Rows, sum.Seconds, sum.RowsPerSecond)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// openPool connects to a database, with room for workers plus the
// planning connections. Session settings that change how values print as
// text are pinned, since key values travel as text between the databases.
func openPool(ctx context.Context, side, url string, workers int) (*pgxpool.Pool, error) {
	return dbconn.Open(ctx, side, url, "datasync backfill", func(cfg *pgxpool.Config) { cfg.MaxConns = int32(workers + 2) })
}
