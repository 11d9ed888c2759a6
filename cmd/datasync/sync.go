package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/progress"
)

// SyncOptions are the flags of datasync sync.
type SyncOptions struct {
	IO    *cli.IO
	Flags mapping.Flags

	Name          string
	UntilCaughtUp bool
	MetricsAddr   string
	MaxLagBytes   int64
	BatchChanges  int
	MaxTxChanges  int
	Workers       int
	BatchSize     int
	// AcceptPartitionLimits accepts, for every partitioned source table,
	// what logical replication does not carry for one.
	AcceptPartitionLimits bool
	TwoWay                bool
	Conflicts             string
}

// NewCmdSync builds datasync sync. runF replaces syncRun in tests.
func NewCmdSync(io *cli.IO, runF func(context.Context, *SyncOptions) error) *cobra.Command {
	opts := &SyncOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Copy the tables, then apply the source's change stream to the target",
		Long: `sync keeps the target tables equal to the source tables through logical replication.

On its first run it checks the source (wal_level=logical, a replica identity that carries each
table's key), creates the publication and the replication slot datasync_NAME, copies every
table from the slot's snapshot (binary COPY in batches, --workers key ranges at once, progress
on stderr; a copy cut short is done again by the next run), then applies the change stream in
source commit order. Each
target transaction stores the applied position in datasync.sync_state, so a restart resumes
where the last one stopped, with no loss and no change applied twice.

Preflight refuses what a change stream cannot keep equal: a source table mapped to two
targets, a deferrable key, a generated source column, and a partitioned source table unless
--accept-partition-limits says that TRUNCATE of one partition, DETACH and ATTACH PARTITION,
which logical replication does not carry, are handled by hand (see Limits in docs/datasync.md).
When it stops, the target's identity and serial sequences are advanced past the keys it wrote.

A source transaction larger than --max-tx-changes is not held in memory whole: it is applied
part by part in one target transaction, committed with its last part.

SIGTERM or Ctrl-C finishes the transaction in hand and exits 0 (a large source transaction
still arriving is rolled back instead, and applied again by the next run). Exit 2 on any error,
including a source table whose columns no longer fit the mapping.

With --two-way (config: two_way: true) the target's changes are applied to the source too, by
a second stream from the slot datasync_NAME_to_source on the target, in the same process.
Changes are applied under the replication origins datasync_NAME_to_target and
datasync_NAME_to_source and are never sent back. It needs track_commit_timestamp = on on both
servers and sets REPLICA IDENTITY FULL on the synced tables of both. A row changed on both
sides before either change reached the other is a conflict, resolved by --conflicts:
last_update_wins (the later commit; the source on a tie), source_wins or target_wins. A change
the other side refuses (foreign key, unique, check) is parked there; see datasync parked.`,
		Example: `  # Follow public.users until stopped, with metrics on :9187
  datasync sync --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL" \
    --table users --metrics-addr 127.0.0.1:9187

  # Catch up with everything committed so far, then exit
  datasync sync --config datasync.yaml --name users --until-caught-up

  # Both databases take writes: keep them equal both ways
  datasync sync --config datasync.yaml --name users --two-way --conflicts last_update_wins`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSyncName(opts.Name); err != nil {
				return err
			}
			if opts.Workers < 1 {
				return fmt.Errorf("--workers %d: want 1 or more", opts.Workers)
			}
			if opts.BatchSize < 1 {
				return fmt.Errorf("--batch-size %d: want 1 or more", opts.BatchSize)
			}
			if opts.Conflicts != "" && !apply.ValidConflictPolicy(opts.Conflicts) {
				return fmt.Errorf("--conflicts %q: use last_update_wins, source_wins or target_wins", opts.Conflicts)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return syncRun(cmd.Context(), opts)
		},
	}
	opts.Flags.Register(cmd.Flags())
	cmd.Flags().StringVar(&opts.Name, "name", "datasync", "name of the sync: its slot and publication are datasync_NAME")
	cmd.Flags().BoolVar(&opts.UntilCaughtUp, "until-caught-up", false, "exit 0 once everything committed on the source before the start is applied")
	cmd.Flags().StringVar(&opts.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9187)")
	cmd.Flags().Int64Var(&opts.MaxLagBytes, "max-lag-bytes", 0, "log a warning while the lag exceeds this many WAL bytes (0: never)")
	cmd.Flags().IntVar(&opts.BatchChanges, "batch-changes", 2000, "apply small source transactions together, up to this many changes per target transaction")
	cmd.Flags().BoolVar(&opts.AcceptPartitionLimits, "accept-partition-limits", false, "sync partitioned source tables although TRUNCATE of one partition, DETACH and ATTACH PARTITION are not replicated (see Limits in docs/datasync.md)")
	cmd.Flags().IntVar(&opts.MaxTxChanges, "max-tx-changes", 10000, "hold at most this many changes of one source transaction in memory: a larger one is applied part by part in one target transaction")
	cmd.Flags().IntVar(&opts.Workers, "workers", 1, "first copy: key ranges copied in parallel from the slot's snapshot")
	cmd.Flags().IntVar(&opts.BatchSize, "batch-size", backfill.DefaultBatchSize, "first copy: rows per batch; each batch commits with its checkpoint")
	cmd.Flags().BoolVar(&opts.TwoWay, "two-way", false, "also apply the target's changes to the source (config: two_way)")
	cmd.Flags().StringVar(&opts.Conflicts, "conflicts", "", "two-way conflict policy: last_update_wins, source_wins or target_wins (config: conflicts; default last_update_wins)")
	return cmd
}

func syncRun(ctx context.Context, opts *SyncOptions) error {
	cfg, err := opts.Flags.Load(opts.IO.Getenv)
	if err != nil {
		return err
	}
	if opts.AcceptPartitionLimits {
		for i := range cfg.Tables {
			cfg.Tables[i].AcceptPartitionLimits = true
		}
	}
	logger := slog.New(slog.NewTextHandler(opts.IO.ErrOut, nil))
	reg := prometheus.NewRegistry()
	metrics := apply.NewMetrics(reg)
	if opts.MetricsAddr != "" {
		stop, err := serveMetrics(opts.MetricsAddr, reg, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return apply.Run(ctx, apply.Config{
		Name:            opts.Name,
		Source:          cfg.Source,
		Target:          cfg.Target,
		Tables:          cfg.Tables,
		UntilCaughtUp:   opts.UntilCaughtUp,
		MaxLagBytes:     opts.MaxLagBytes,
		MaxBatchChanges: opts.BatchChanges,
		MaxTxChanges:    opts.MaxTxChanges,
		Logger:          logger,
		Metrics:         metrics,
		CopyWorkers:     opts.Workers,
		CopyBatchSize:   opts.BatchSize,
		Progress:        progress.Options{Out: opts.IO.ErrOut, Terminal: opts.IO.ErrIsTerminal},
		TwoWay:          opts.TwoWay || cfg.TwoWay,
		Conflicts:       cmp.Or(opts.Conflicts, cfg.Conflicts),
	})
}

// serveMetrics serves /metrics on addr until the returned stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "error", err)
		}
	}()
	logger.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// checkSyncName rejects a --name that cannot name a slot and publication.
func checkSyncName(name string) error {
	if !apply.ValidName(name) {
		return fmt.Errorf("--name %q: use lower-case letters, digits and _ (at most 54)", name)
	}
	return nil
}
