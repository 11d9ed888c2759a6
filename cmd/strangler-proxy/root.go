package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/toggles/togglescmd"
)

// Streams are a command's input and outputs; run functions never touch
// os.Stdout directly.
type Streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // an invalid config or a failure while running
	exitUsage = 2 // bad flags or arguments
)

// errUsage marks command-line mistakes.
var errUsage = errors.New("usage")

// Main runs the command line args and returns the process exit code. It is
// the one place errors become exit codes.
func Main(ctx context.Context, args []string, streams Streams) int {
	root := NewCmdRoot(streams)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, proxyconfig.ErrInvalid):
		fmt.Fprintln(streams.Err, err)
		return exitError
	case errors.Is(err, errUsage):
		fmt.Fprintln(streams.Err, err)
		return exitUsage
	default:
		fmt.Fprintln(streams.Err, "strangler-proxy:", err)
		return exitError
	}
}

// NewCmdRoot builds the strangler-proxy command tree.
func NewCmdRoot(streams Streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "strangler-proxy",
		Short: "Reverse proxy for strangler-fig migrations",
		Long: `strangler-proxy stands in front of a legacy app (the monolith) and sends path
prefixes to new services, falling back to the monolith when a service fails,
without ever replaying a write that may have reached the service.`,
		Example: `  strangler-proxy validate --config strangler.yaml
  strangler-proxy serve --config strangler.yaml
  strangler-proxy rollout set users-migration 25`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.Err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w: %v (see %s --help)", errUsage, err, c.CommandPath())
	})
	root.AddCommand(NewCmdServe(streams, nil))
	root.AddCommand(NewCmdValidate(streams, nil))
	root.AddCommand(NewCmdExplain(streams, nil))
	deps := togglescmd.Deps{Out: streams.Out, ErrOut: streams.Err}
	root.AddCommand(togglescmd.NewCmdRollout(deps), togglescmd.NewCmdFlags(deps))
	usageArgs(root)
	return root
}

// usageArgs makes the argument checks of c and its subcommands report usage
// errors (exit 2), like bad flags: a missing or extra argument is a mistake
// on the command line, not a failure of the command.
//
// A command that only groups others (rollout, flags, the root) runs to
// print its help, and calls an argument that names none of its commands a
// usage error: cobra would print the help and exit 0.
func usageArgs(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unknown command %q for %q (see %s --help)", errUsage, args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			err := check(cmd, args)
			if err == nil || errors.Is(err, errUsage) {
				return err
			}
			return fmt.Errorf("%w: %v (see %s --help)", errUsage, err, cmd.CommandPath())
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// addConfigFlag adds --config (-c), whose default is $STRANGLER_CONFIG,
// else strangler.yaml.
func addConfigFlag(cmd *cobra.Command, path *string) {
	def := "strangler.yaml"
	if p := os.Getenv("STRANGLER_CONFIG"); p != "" {
		def = p
	}
	cmd.Flags().StringVarP(path, "config", "c", def, "configuration file ($STRANGLER_CONFIG overrides the default)")
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: %s takes no arguments, got %q (see %s --help)", errUsage, cmd.Name(), args, cmd.CommandPath())
	}
	return nil
}
