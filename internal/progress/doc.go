// Package progress reports how far a long copy or comparison has got.
//
// A Reporter counts rows as workers finish them (Add is safe from many
// goroutines) and prints, every so often, either a one-line progress bar
// with the rate and the time left, when its output is a terminal, or a JSON
// object per line, when it is not (a log file, a CI job, a pipe):
//
//	r := progress.New(progress.Options{Out: io.ErrOut, Terminal: io.ErrIsTerminal,
//		Label: "public.users", Total: estimate})
//	r.Start()
//	... r.Add(n) for every batch ...
//	sum := r.Finish() // the last line; sum.Rows, sum.Seconds, sum.RowsPerSecond
//
// Finish stops the background printing and writes a final line, so nothing
// is printed after it returns.
package progress
