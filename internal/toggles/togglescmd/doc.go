// Package togglescmd has the cobra commands operators use to move rollout
// flags: "rollout get|set|enable|disable", which talk to a running
// strangler-proxy's admin API, and "flags export --format flagd", which
// writes the flags file as a flagd flag-definition file.
//
// Each command is an Options struct, a NewCmdX constructor that parses and
// checks its arguments, and an xRun function that does the work. Output
// streams, the HTTP client and the environment come in through Deps, so
// tests capture them; the proxy's main adds the commands with
//
//	root.AddCommand(togglescmd.NewCmdRollout(deps), togglescmd.NewCmdFlags(deps))
package togglescmd
