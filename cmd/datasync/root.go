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
		Short: "Move a table from the monolith's database to a service's database, and keep them equal",
		Long: `datasync moves tables from a source PostgreSQL database (the monolith's) to a target
database (a service's own): backfill copies history in batches, sync follows the source's
change stream, verify compares the two and can repair the target.

Databases come from --source/--target, else the --config file, else $DATASYNC_SOURCE and
$DATASYNC_TARGET. Tables come from --table (repeatable, SOURCE:TARGET renames) or --config.`,
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
	)
	return root
}

func run(ctx context.Context, args []string, io *cli.IO) int {
	root := newRootCmd(io)
	root.SetArgs(args)
	return cli.ExitCode(root.ExecuteContext(ctx), io.ErrOut, exitError)
}
