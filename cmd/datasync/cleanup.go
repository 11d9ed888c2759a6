package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// CleanupOptions are the flags of datasync cleanup.
type CleanupOptions struct {
	IO *cli.IO
	// Conn holds --source, --target and --config.
	Conn mapping.Flags
	Name string
}

// NewCmdCleanup builds datasync cleanup. runF replaces cleanupRun in tests.
func NewCmdCleanup(io *cli.IO, runF func(context.Context, *CleanupOptions) error) *cobra.Command {
	opts := &CleanupOptions{IO: io}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Drop a sync's slots, publications, origins and checkpoints",
		Long: `cleanup drops what sync --name NAME created: the replication slot and publication
datasync_NAME on the source, and its rows in the target's datasync schema. For a two-way
sync also the slot and publication datasync_NAME_to_source on the target, the replication
origins datasync_NAME_to_target and datasync_NAME_to_source, and the reverse direction's
checkpoint in the source's datasync schema. Whatever does not exist is skipped, so it can
be run again. It prints one line per object dropped.

The tables and rows stay, and so do the sequence ranges two-way sync set up (they keep
the sides' ids apart). A running sync must be stopped first. Run it after cutover, or
to start a sync over from a fresh copy. Backfill checkpoints stay (backfill --restart
forgets them). Exit 2 on any error.`,
		Example: `  # Drop the sync called users, databases from the config file
  datasync cleanup --config datasync.yaml --name users

  # The sync started without --name
  datasync cleanup --source "$MONOLITH_DATABASE_URL" --target "$USERS_DATABASE_URL" --name datasync`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("name") {
				return fmt.Errorf("--name is required: cleanup drops the slot and checkpoints of one sync (a sync started without --name is called datasync)")
			}
			if err := checkSyncName(opts.Name); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return cleanupRun(cmd.Context(), opts)
		},
	}
	opts.Conn.RegisterConnections(cmd.Flags())
	// No default: dropping the wrong sync's slot loses its position, so the
	// name must be spelled out.
	cmd.Flags().StringVar(&opts.Name, "name", "", "name of the sync to drop, as given to sync --name (required)")
	return cmd
}

func cleanupRun(ctx context.Context, opts *CleanupOptions) error {
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
	rep, err := apply.DropSync(ctx, src, dst, opts.Name)
	for _, d := range rep.Dropped {
		fmt.Fprintf(opts.IO.Out, "dropped %s\n", d)
	}
	if err != nil {
		return err
	}
	if len(rep.Dropped) == 0 {
		fmt.Fprintf(opts.IO.Out, "nothing to drop: no slot, publication, origin or checkpoint of sync %s\n", opts.Name)
	}
	return nil
}
