package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/netcount"
	"github.com/strangler-fig/strangler/internal/reconcile"
)

// VerifyOptions are the parsed flags of datasync verify.
type VerifyOptions struct {
	IO    *cli.IO
	Flags mapping.Flags

	ReportFile   string
	MaxSamples   int
	RecheckDelay time.Duration
	Repair       bool
	DryRun       bool
	Textfile     string
	Pushgateway  string
	// TwoWay classifies differences by the side that wrote last, for the
	// two-way sync called Name; the config's two_way sets it too.
	TwoWay bool
	Name   string

	// Tuning and measurement, hidden from --help.
	LeafRows   int
	MaxBuckets int
	Hash       string
	DebugBytes bool

	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewCmdVerify returns the verify command. run, if not nil, replaces
// verifyRun (tests use it to see the parsed options).
func NewCmdVerify(io *cli.IO, run func(context.Context, *VerifyOptions) error) *cobra.Command {
	opts := &VerifyOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Compare source and target tables, report differences, optionally repair them",
		Long: `verify compares each mapped table of the source database with its target table, by value:
NULL differs from '', a timestamp one microsecond off differs, 1.5 equals 1.50, text compares
byte for byte. Both databases checksum key ranges in parallel and only ranges that differ are
split further, so identical tables cost one scan of each side and very little network traffic;
small differing ranges are compared row by row to name the exact keys and columns.

With --two-way (or two_way: true in the config), for a two-way sync (--name), each difference is
classified by the side that wrote the row last (its commit timestamp and replication origin; both
databases need track_commit_timestamp = on): a row only in the target that the service wrote is
missing_in_source, and --repair copies it to the source instead of deleting it.

--repair is safe beside a running sync: each row is locked in the database it writes before the
other side is read.

Exit status: 0 consistent, 1 differences found (after --repair: still there), 2 error.`,
		Example: `  # Compare one table, same name on both sides
  datasync verify --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL" --table public.users

  # Nightly job: every table of the config, JSON report and node_exporter metrics
  datasync verify --config datasync.yaml --report /var/lib/datasync/verify.json \
    --textfile /var/lib/node_exporter/textfile/datasync_verify.prom

  # While a sync runs: recheck differences after 5s, report only those that persist
  datasync verify --config datasync.yaml --recheck-delay 5s

  # Show what a repair would change, then repair
  datasync verify --config datasync.yaml --repair --dry-run
  datasync verify --config datasync.yaml --repair

  # Both sides take writes (two-way sync "users"): repair toward the side that wrote last
  datasync verify --config datasync.yaml --two-way --name users --repair`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.DryRun && !opts.Repair {
				return errors.New("--dry-run only makes sense with --repair")
			}
			if opts.MaxSamples < 0 {
				return fmt.Errorf("--max-samples %d: must be 0 or more", opts.MaxSamples)
			}
			if err := checkSyncName(opts.Name); err != nil {
				return err
			}
			if opts.RecheckDelay < 0 {
				return fmt.Errorf("--recheck-delay %s: must not be negative", opts.RecheckDelay)
			}
			switch reconcile.HashMode(opts.Hash) {
			case reconcile.HashAuto, reconcile.HashRecord, reconcile.HashMD5:
			default:
				return fmt.Errorf("--hash %q: want record or md5", opts.Hash)
			}
			if run != nil {
				return run(cmd.Context(), opts)
			}
			return verifyRun(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	opts.Flags.Register(fs)
	fs.StringVar(&opts.ReportFile, "report", "", "write the JSON report to `FILE`")
	fs.IntVar(&opts.MaxSamples, "max-samples", reconcile.DefaultMaxSamples, "list up to `N` keys of each kind of difference")
	fs.DurationVar(&opts.RecheckDelay, "recheck-delay", 0, "check differing rows again after this delay and report only persistent ones (0: no recheck)")
	fs.BoolVar(&opts.Repair, "repair", false, "make the target match the source for every difference, then verify again")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "with --repair: print what would change, write nothing")
	fs.StringVar(&opts.Textfile, "textfile", "", "write Prometheus metrics to `FILE` for node_exporter's textfile collector")
	fs.StringVar(&opts.Pushgateway, "pushgateway", "", "push Prometheus metrics to the Pushgateway at `URL`")
	fs.BoolVar(&opts.TwoWay, "two-way", false, "both sides take writes: classify differences by the side that wrote last (needs track_commit_timestamp = on)")
	fs.StringVar(&opts.Name, "name", reconcile.DefaultName, "with --two-way or --repair: the name of the sync (its origins are datasync_NAME_to_target and datasync_NAME_to_source)")
	fs.IntVar(&opts.LeafRows, "leaf-rows", reconcile.DefaultLeafRows, "largest range compared row by row")
	fs.IntVar(&opts.MaxBuckets, "max-buckets", reconcile.DefaultMaxBuckets, "most key ranges of the first pass")
	fs.StringVar(&opts.Hash, "hash", "", "row hash: record (PostgreSQL 14+) or md5; default by server version")
	fs.BoolVar(&opts.DebugBytes, "debug-bytes", false, "print the bytes received from each database to stderr")
	for _, name := range []string{"leaf-rows", "max-buckets", "hash", "debug-bytes"} {
		_ = fs.MarkHidden(name)
	}
	return cmd
}

func newCmdVerify(io *cli.IO) *cobra.Command { return NewCmdVerify(io, nil) }

func connectVerify(ctx context.Context, url, side string, counter *netcount.Counter) (*pgxpool.Pool, error) {
	return dbconn.Open(ctx, side, url, "datasync-verify", func(cfg *pgxpool.Config) {
		reconcile.ConfigurePool(cfg)
		if counter != nil {
			cfg.ConnConfig.DialFunc = counter.Dial
		}
	})
}

func verifyRun(ctx context.Context, opts *VerifyOptions) error {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	cfg, err := opts.Flags.Load(opts.IO.Getenv)
	if err != nil {
		return err
	}
	var srcBytes, dstBytes *netcount.Counter
	if opts.DebugBytes {
		srcBytes, dstBytes = &netcount.Counter{}, &netcount.Counter{}
	}
	src, err := connectVerify(ctx, cfg.Source, "source", srcBytes)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := connectVerify(ctx, cfg.Target, "target", dstBytes)
	if err != nil {
		return err
	}
	defer dst.Close()

	tables, err := mapping.ResolveAll(ctx, src, dst, cfg.Tables)
	if err != nil {
		return err
	}
	maxSamples := opts.MaxSamples
	if maxSamples == 0 {
		maxSamples = -1 // Options reads 0 as the default
	}
	bar := newVerifyProgress(opts.IO)
	rep, err := reconcile.Verify(ctx, src, dst, tables, reconcile.Options{
		MaxSamples:   maxSamples,
		RecheckDelay: opts.RecheckDelay,
		Repair:       opts.Repair,
		DryRun:       opts.DryRun,
		TwoWay:       opts.TwoWay || cfg.TwoWay,
		Name:         opts.Name,
		LeafRows:     opts.LeafRows,
		MaxBuckets:   opts.MaxBuckets,
		Hash:         reconcile.HashMode(opts.Hash),
		Progress:     bar.update,
	})
	bar.finish()
	if err != nil {
		return err
	}
	if err := rep.WriteSummary(opts.IO.Out); err != nil {
		return err
	}
	if opts.DebugBytes {
		fmt.Fprintf(opts.IO.ErrOut, "bytes received: source %d, target %d\n", srcBytes.Received(), dstBytes.Received())
	}
	if opts.ReportFile != "" {
		var b bytes.Buffer
		if err := rep.WriteJSON(&b); err != nil {
			return err
		}
		if err := writeFileAtomic(opts.ReportFile, b.Bytes()); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if opts.Textfile != "" || opts.Pushgateway != "" {
		reg := rep.Registry(now())
		if opts.Textfile != "" {
			if err := reconcile.WriteTextfile(opts.Textfile, reg); err != nil {
				return err
			}
		}
		if opts.Pushgateway != "" {
			if err := reconcile.Push(ctx, opts.Pushgateway, reg, nil); err != nil {
				return err
			}
		}
	}
	if !rep.Consistent {
		return &cli.ExitError{Code: 1}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it over path, so readers never see half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
