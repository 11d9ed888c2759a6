package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/origins"
)

// StatusOptions are the flags of datasync status.
type StatusOptions struct {
	IO *cli.IO
	// Conn holds --source, --target and --config.
	Conn   mapping.Flags
	Name   string
	Tables []string
	JSON   bool
}

// NewCmdStatus builds datasync status. runF replaces statusRun in tests.
func NewCmdStatus(io *cli.IO, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a sync's lag and applied position, and the backfills' progress",
		Long: `status reads the sync's replication slot on the source (lag in bytes and seconds, wal_status)
and its checkpoints in the target (applied LSN, last apply time, copied tables), then the
progress of every backfill from the target's datasync.backfill_progress: rows copied, key
ranges done, done or in progress, last update, and an estimate of the total rows (the
source's planner statistics until the table is done).

For a two-way sync it also shows the reverse direction's slot and publication
datasync_NAME_to_source on the target, the replication origins datasync_NAME_to_target
and datasync_NAME_to_source with how far each has applied, and the key headroom: for
each sequence whose range was split, how many values are left before its range ends.

Either may be missing: after a backfill alone it says there is no sync of that name. With
--table, or tables in --config, only those target tables are listed.`,
		Example: `  # Everything the target knows of, as text
  datasync status --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL"

  # The sync called users and the tables of a config file
  datasync status --config datasync.yaml --name users

  # One table, as JSON
  datasync status --config datasync.yaml --table users --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSyncName(opts.Name); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	opts.Conn.RegisterConnections(cmd.Flags())
	cmd.Flags().StringVar(&opts.Name, "name", "datasync", "name of the sync: its slot and publication are datasync_NAME")
	cmd.Flags().StringArrayVar(&opts.Tables, "table", nil, "show only this target table, TABLE or SOURCE:TARGET (repeatable; adds to the config's tables)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the status as JSON")
	return cmd
}

// openPools connects to the config's source and target.
func openPools(ctx context.Context, cfg *mapping.Config) (src, dst *pgxpool.Pool, err error) {
	if src, err = dbconn.Open(ctx, "source", cfg.Source, "datasync", nil); err != nil {
		return nil, nil, fmt.Errorf("connect source: %w", err)
	}
	if dst, err = dbconn.Open(ctx, "target", cfg.Target, "datasync", nil); err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("connect target: %w", err)
	}
	return src, dst, nil
}

// statusTargets are the target tables status lists: the --table flags'
// and the config's; none means every table.
func statusTargets(cfg *mapping.Config, flags []string) ([]mapping.Ident, error) {
	specs := slices.Clone(cfg.Tables)
	for _, v := range flags {
		spec, err := mapping.ParseTableFlag(v)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	var ids []mapping.Ident
	for _, spec := range specs {
		name := cmp.Or(spec.Target, spec.Source)
		id, err := mapping.ParseIdent(name)
		if err != nil {
			return nil, fmt.Errorf("status: table %q: %w", name, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// statusReport is what status prints: the sync's status, with the same
// JSON fields as before, and the backfills' progress.
type statusReport struct {
	*apply.Status
	// SyncFound reports that the source has the sync's slot or the target
	// its checkpoints.
	SyncFound bool `json:"sync_found"`
	// Backfill is the progress of every backfill, per target table.
	Backfill []backfill.TableProgress `json:"backfill"`
	// TwoWay is the reverse direction, conflicts and parked changes of a
	// two-way sync; absent for a one-way sync.
	TwoWay *apply.TwoWayStatus `json:"two_way_apply,omitempty"`
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	cfg, err := opts.Conn.LoadConnections(opts.IO.Getenv)
	if err != nil {
		return err
	}
	targets, err := statusTargets(cfg, opts.Tables)
	if err != nil {
		return err
	}
	src, dst, err := openPools(ctx, cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	defer dst.Close()
	st, err := apply.GetStatus(ctx, src, dst, opts.Name)
	if err != nil {
		return err
	}
	rep := statusReport{Status: st, SyncFound: st.SlotExists || st.PublicationExists || st.AppliedLSN != "" || len(st.Tables) > 0 || st.TwoWay}
	if len(targets) > 0 {
		st.Tables = slices.DeleteFunc(st.Tables, func(t apply.TableStatus) bool {
			return !slices.ContainsFunc(targets, func(id mapping.Ident) bool { return id.String() == t.Target })
		})
	}
	if rep.Backfill, err = backfill.ReadProgress(ctx, src, dst, targets); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if rep.TwoWay, err = apply.GetTwoWayStatus(ctx, apply.Sides{Source: src, Target: dst}, opts.Name); err != nil {
		return err
	}
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printStatus(opts.IO.Out, &rep)
}

func printStatus(out io.Writer, rep *statusReport) error {
	const stamp = "2006-01-02T15:04:05Z07:00"
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	st := rep.Status
	if rep.SyncFound {
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
		fmt.Fprintf(w, "publication\t%s (%s)\n", st.Publication, existsText(st.PublicationExists))
		fmt.Fprintf(w, "lag\t%d bytes, %.1f s\n", st.LagBytes, st.LagSeconds)
		fmt.Fprintf(w, "source lsn\t%s\n", st.SourceLSN)
		fmt.Fprintf(w, "confirmed lsn\t%s\n", orDash(st.ConfirmedFlushLSN))
		fmt.Fprintf(w, "applied lsn\t%s\n", orDash(st.AppliedLSN))
		if st.LastApply != nil {
			fmt.Fprintf(w, "last apply\t%s\n", st.LastApply.UTC().Format(stamp))
		}
		for _, t := range st.Tables {
			fmt.Fprintf(w, "table %s\tcopied %d rows at %s (%s)\n", t.Target, t.CopiedRows, t.CopiedLSN, t.CopiedAt.UTC().Format(stamp))
		}
		if st.TwoWay {
			printReverse(w, st)
		}
	} else {
		fmt.Fprintf(w, "sync\tno sync named %s (no slot %s on the source, no checkpoints in the target)\n", st.Name, st.Slot)
	}
	printHeadroom(w, st.KeyHeadroom)
	if rep.TwoWay != nil {
		printConflicts(w, rep.TwoWay)
	}
	if len(rep.Backfill) == 0 {
		fmt.Fprintf(w, "backfill\tnone: no backfill checkpoints in the target\n")
	}
	for _, p := range rep.Backfill {
		label := "backfill " + p.Target
		if p.Name != backfill.DefaultName {
			label += " (" + p.Name + ")"
		}
		state := "in progress"
		if p.Done {
			state = "done"
		}
		rows := fmt.Sprintf("%d rows", p.RowsCopied)
		if !p.Done && p.EstimatedRows != nil && *p.EstimatedRows > 0 {
			rows = fmt.Sprintf("%d of ~%d rows (%.0f%%)", p.RowsCopied, *p.EstimatedRows, 100*float64(p.RowsCopied)/float64(*p.EstimatedRows))
		}
		fmt.Fprintf(w, "%s\t%s: %s, %d/%d ranges done, updated %s\n", label, state, rows, p.RangesDone, p.Ranges, p.UpdatedAt.UTC().Format(stamp))
	}
	return w.Flush()
}

// printReverse prints the reverse direction's slot and publication and the
// origins of a two-way sync.
func printReverse(w io.Writer, st *apply.Status) {
	r := st.Reverse
	slot := "missing"
	if r.SlotExists {
		slot = "inactive"
		if r.SlotActive {
			slot = "active"
		}
		slot += ", wal_status " + r.WALStatus
	}
	fmt.Fprintf(w, "reverse slot\t%s on the target (%s)\n", r.Slot, slot)
	fmt.Fprintf(w, "reverse publication\t%s on the target (%s)\n", r.Publication, existsText(r.PublicationExists))
	if r.SlotExists {
		fmt.Fprintf(w, "reverse lag\t%d bytes (target lsn %s, confirmed %s)\n", r.LagBytes, r.TargetLSN, orDash(r.ConfirmedFlushLSN))
	}
	for _, o := range st.Origins {
		switch {
		case origins.IsRepair(o.Name) && o.Exists:
			fmt.Fprintf(w, "origin %s\tin the %s's cluster (marks what datasync verify --two-way --repair writes)\n", o.Name, o.Database)
		case origins.IsRepair(o.Name):
			fmt.Fprintf(w, "origin %s\tmissing in the %s's cluster (a sync of this version creates it; until then repair waits for the sync's own origins)\n", o.Name, o.Database)
		case !o.Exists:
			fmt.Fprintf(w, "origin %s\tmissing in the %s's cluster\n", o.Name, o.Database)
		case o.RemoteLSN == "0/0":
			// The sync keeps its position in datasync.sync_state, with the
			// changes: the origin marks them, it does not track them.
			fmt.Fprintf(w, "origin %s\tin the %s's cluster (marks what the sync applies; its position is in datasync.sync_state)\n", o.Name, o.Database)
		case o.RemoteLSN != "":
			fmt.Fprintf(w, "origin %s\tin the %s's cluster: applied up to %s of the other side's WAL (local %s)\n", o.Name, o.Database, o.RemoteLSN, orDash(o.LocalLSN))
		default:
			fmt.Fprintf(w, "origin %s\tin the %s's cluster: nothing applied yet\n", o.Name, o.Database)
		}
	}
	for _, ts := range st.Tombstones {
		fmt.Fprintf(w, "tombstones (%s)\t%d deleted keys kept, triggers on %d tables\n", ts.Database, ts.Keys, ts.Triggers)
	}
}

// printHeadroom prints, per sequence split into ranges for two-way sync,
// the values left before its range ends.
func printHeadroom(w io.Writer, hs []apply.SequenceHeadroom) {
	for _, h := range hs {
		fmt.Fprintf(w, "key headroom %s.%s (%s)\t%d values left: %s hands out %d next, its range ends at %d\n",
			h.Table, h.Column, h.Database, h.Left, h.Sequence, h.Next, h.Max)
	}
}

func existsText(ok bool) string {
	if ok {
		return "exists"
	}
	return "missing"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printConflicts prints the reverse direction's checkpoint, the conflicts
// and the parked changes of a two-way sync.
func printConflicts(w io.Writer, tw *apply.TwoWayStatus) {
	const stamp = "2006-01-02T15:04:05.000000Z07:00"
	fmt.Fprintf(w, "reverse applied lsn\t%s\n", orDash(tw.ReverseAppliedLSN))
	var total int64
	for _, c := range tw.Conflicts {
		total += c.Count
	}
	fmt.Fprintf(w, "conflicts\t%d\n", total)
	for _, c := range tw.Conflicts {
		fmt.Fprintf(w, "conflict count\t%s %s %s %s: %d\n", c.Direction, c.Table, c.Kind, c.Resolution, c.Count)
	}
	for _, c := range tw.RecentConflicts {
		at := func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return t.UTC().Format(stamp)
		}
		fmt.Fprintf(w, "conflict\t%s %s %s key %s: local commit %s, incoming commit %s, %s\n",
			c.Direction, c.Table, c.Kind, c.Key, at(c.LocalCommitTime), at(c.RemoteCommitTime), c.Resolution)
	}
	fmt.Fprintf(w, "parked changes\t%d (datasync parked list|retry|drop)\n", len(tw.Parked))
	for _, p := range tw.Parked {
		fmt.Fprintf(w, "parked\t%s #%d %s %s key %s: %s\n", p.Side, p.ID, p.Op, p.Table, p.Key, p.Reason)
	}
}
