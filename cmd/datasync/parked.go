package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// ParkedOptions are the flags of datasync parked list|retry|drop.
type ParkedOptions struct {
	IO *cli.IO
	// Conn holds --source, --target and --config.
	Conn   mapping.Flags
	Name   string
	Action string // list, retry or drop
	ID     int64
	Side   string
	All    bool
	JSON   bool
}

// NewCmdParked builds datasync parked. runF replaces parkedRun in tests.
func NewCmdParked(io *cli.IO, runF func(context.Context, *ParkedOptions) error) *cobra.Command {
	opts := &ParkedOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "parked list|retry|drop",
		Short: "List, retry or drop the changes a two-way sync parked",
		Long: `A two-way sync parks a change that the side it applies to refuses (a foreign key, a unique
index, a check constraint) instead of stopping: the change waits, with the reason, in
datasync.sync_parked of the side that refused it, and the stream goes on.

  list   the parked changes of both sides: side, id, table, operation, key, reason
  retry  mark parked changes for another try; the running sync applies them within a
         second (a stopped one as it starts). One refused again stays parked with the new
         reason and one more attempt.
  drop   delete parked changes: they are never applied, and the sides may differ on
         those rows until they are written again or repaired (verify --two-way --repair).

retry and drop take --id N with --side (ids are numbered per side), or --all.`,
		Example: `  # What is parked, and why
  datasync parked list --config datasync.yaml --name users

  # The order that blocked a delete is gone: try the delete again
  datasync parked retry --config datasync.yaml --name users --side source --id 3

  # Give up on everything parked
  datasync parked drop --config datasync.yaml --name users --all`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"list", "retry", "drop"},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Action = args[0]
			switch opts.Action {
			case "list":
			case "retry", "drop":
				switch {
				case opts.ID == 0 && !opts.All:
					return fmt.Errorf("parked %s: pass --id N with --side, or --all", opts.Action)
				case opts.ID != 0 && opts.All:
					return fmt.Errorf("parked %s: pass either --id or --all, not both", opts.Action)
				case opts.ID != 0 && opts.Side == "":
					return fmt.Errorf("parked %s: --id needs --side source or --side target: ids are numbered per side", opts.Action)
				}
			default:
				return fmt.Errorf("parked: unknown action %q: use list, retry or drop", opts.Action)
			}
			if opts.Side != "" && opts.Side != "source" && opts.Side != "target" {
				return fmt.Errorf("--side %q: use source or target", opts.Side)
			}
			if err := checkSyncName(opts.Name); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return parkedRun(cmd.Context(), opts)
		},
	}
	opts.Conn.RegisterConnections(cmd.Flags())
	cmd.Flags().StringVar(&opts.Name, "name", "datasync", "name of the sync, as given to sync --name")
	cmd.Flags().Int64Var(&opts.ID, "id", 0, "the parked change to retry or drop (with --side)")
	cmd.Flags().StringVar(&opts.Side, "side", "", "the side holding the parked change: source or target (default: both)")
	cmd.Flags().BoolVar(&opts.All, "all", false, "retry or drop every parked change (of --side, if given)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "list as JSON")
	return cmd
}

func parkedRun(ctx context.Context, opts *ParkedOptions) error {
	cfg, err := opts.Conn.LoadConnections(opts.IO.Getenv)
	if err != nil {
		return err
	}
	src, dst, err := openPools(ctx, cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	defer dst.Close()
	sides := apply.Sides{Source: src, Target: dst}
	switch opts.Action {
	case "retry":
		n, err := apply.RetryParked(ctx, sides, opts.Name, opts.Side, opts.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(opts.IO.Out, "marked %d parked change(s) for retry; the running sync applies them within a second (datasync parked list shows what is left)\n", n)
		return nil
	case "drop":
		n, err := apply.DropParked(ctx, sides, opts.Name, opts.Side, opts.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(opts.IO.Out, "dropped %d parked change(s)\n", n)
		return nil
	}
	list, err := apply.ListParked(ctx, sides, opts.Name)
	if err != nil {
		return err
	}
	if opts.JSON {
		if list == nil {
			list = []apply.ParkedChange{}
		}
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if len(list) == 0 {
		fmt.Fprintf(opts.IO.Out, "no parked changes for sync %s\n", opts.Name)
		return nil
	}
	w := tabwriter.NewWriter(opts.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SIDE\tID\tTABLE\tOP\tKEY\tPARKED AT\tATTEMPTS\tREASON")
	for _, p := range list {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Side, p.ID, p.Table, p.Op, p.Key,
			p.ParkedAt.UTC().Format("2006-01-02T15:04:05Z07:00"), p.Attempts, p.Reason)
	}
	return w.Flush()
}
