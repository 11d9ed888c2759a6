package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/cli"
)

// TestHelpTexts holds every command's help to the same shape: a long
// description, examples that run that command, and a line in the root's
// list of commands.
func TestHelpTexts(t *testing.T) {
	var out bytes.Buffer
	root := newRootCmd(&cli.IO{In: strings.NewReader(""), Out: &out, ErrOut: &out, Getenv: func(string) string { return "" }})
	if root.Example == "" {
		t.Errorf("datasync: got no examples, want some")
	}
	for _, cmd := range root.Commands() {
		name := cmd.Name()
		if name == "help" || name == "completion" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if cmd.Long == "" {
				t.Errorf("got no long description, want one")
			}
			if !strings.Contains(cmd.Example, "datasync "+name+" ") {
				t.Errorf("got examples %q, want them to run datasync %s", cmd.Example, name)
			}
			if !strings.Contains(root.Long, "\n  "+name+" ") {
				t.Errorf("got root description without %s in its list of commands:\n%s", name, root.Long)
			}
			if !strings.Contains(cmd.Flags().FlagUsages(), "--config") {
				t.Errorf("got no --config flag, want every command to read the config file")
			}
		})
	}
}
