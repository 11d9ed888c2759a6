// Package cli holds what the commands of strangler-proxy and datasync share:
// their injected input and output streams, and the mapping of errors to exit
// codes.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// IO is a command's streams. Commands write only to these, never to
// os.Stdout, so tests can capture what they print.
type IO struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// ErrIsTerminal reports whether ErrOut is a terminal, where progress
	// bars go; elsewhere progress is printed as JSON lines.
	ErrIsTerminal bool
	// Getenv reads the environment; tests pass their own.
	Getenv func(string) string
}

// System returns the process's own streams and environment.
func System() *IO {
	return &IO{
		In:            os.Stdin,
		Out:           os.Stdout,
		ErrOut:        os.Stderr,
		ErrIsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
		Getenv:        os.Getenv,
	}
}

// ExitError carries a specific exit code, such as verify's 1 for "found
// differences". Its message, if any, is printed before exiting.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode prints err (if any) to w and returns the exit code for it:
// 0 for nil, an *ExitError's own code, else fallback.
func ExitCode(err error, w io.Writer, fallback int) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(w, "error:", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintln(w, "error:", err)
	return fallback
}
