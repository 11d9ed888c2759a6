package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/cli"
)

// exitError is datasync's exit code for any error: bad input, a failed
// preflight, a lost connection. verify uses 1 for "differences found".
const exitError = 2

func newRootCmd(io *cli.IO) *cobra.Command {
	root := &cobra.Command{
		Use:   "datasync",
		Short: "Move tables from the monolith's database to a service's database, and keep them equal",
		Long: `datasync moves tables from a source PostgreSQL database (the monolith's) to a target
database (a service's own), and keeps them equal:

  backfill  copy every row in resumable batches, checkpointed in the target
  sync      copy, then apply the source's change stream through a replication slot
  verify    compare source and target, report differences and optionally repair them
  status    show a sync's lag and applied position, and every backfill's progress
  cleanup   drop a sync's slot, publication and checkpoints
  parked    list, retry or drop the changes a two-way sync parked

Databases come from --source/--target, else the --config file, else $DATASYNC_SOURCE and
$DATASYNC_TARGET. Tables come from --table (repeatable, SOURCE:TARGET renames) or --config.
Exit status: 0 success, 2 error; verify exits 1 when it finds differences.`,
		Example: `  # Copy the history once, resumably, then compare
  export DATASYNC_SOURCE="$MONOLITH_DATABASE_URL" DATASYNC_TARGET="$USERS_DATABASE_URL"
  datasync backfill --table users
  datasync verify --table users

  # Or follow the change stream (it copies first) and watch it
  datasync sync --table users --name users &
  datasync status --name users

  # After cutover: stop the sync, then drop its slot
  datasync cleanup --name users`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(io.Out)
	root.SetErr(io.ErrOut)
	root.SetIn(io.In)
	root.AddCommand(
		newCmdBackfill(io),
		NewCmdSync(io, nil),
		NewCmdStatus(io, nil),
		NewCmdCleanup(io, nil),
		newCmdVerify(io),
		NewCmdParked(io, nil),
	)
	return root
}

func run(ctx context.Context, args []string, io *cli.IO) int {
	root := newRootCmd(io)
	root.SetArgs(args)
	return cli.ExitCode(root.ExecuteContext(ctx), io.ErrOut, exitError)
}
