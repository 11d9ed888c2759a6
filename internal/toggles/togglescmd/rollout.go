package togglescmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/toggles"
)

// DefaultAdminURL is the admin API used without --admin or
// $STRANGLER_ADMIN_URL.
const DefaultAdminURL = "http://127.0.0.1:9901"

// Deps are what the commands get from outside.
type Deps struct {
	// Out receives results; ErrOut diagnostics.
	Out, ErrOut io.Writer
	// HTTPClient talks to the admin API. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Getenv reads STRANGLER_ADMIN_URL and STRANGLER_ADMIN_TOKEN. Nil
	// means os.Getenv.
	Getenv func(string) string
}

func (d Deps) getenv(k string) string {
	if d.Getenv == nil {
		return os.Getenv(k)
	}
	return d.Getenv(k)
}

// AdminFlags are the flags every rollout command shares.
type AdminFlags struct {
	URL   string // --admin
	Token string // --token; empty means $STRANGLER_ADMIN_TOKEN
}

func (a *AdminFlags) client(d Deps) *AdminClient {
	token := a.Token
	if token == "" {
		// Read here, not as the flag's default, so --help never shows it.
		token = d.getenv("STRANGLER_ADMIN_TOKEN")
	}
	return &AdminClient{BaseURL: a.URL, Token: token, HTTP: d.HTTPClient}
}

// NewCmdRollout returns "rollout" with get, set, enable and disable.
func NewCmdRollout(d Deps) *cobra.Command {
	admin := &AdminFlags{}
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Show and change rollout flags on a running strangler-proxy",
		Long: `Show and change rollout flags through a running strangler-proxy's admin API.
A change is validated, written to the flags file and in force when the command returns.`,
		Example: `  export STRANGLER_ADMIN_URL=http://127.0.0.1:9901 STRANGLER_ADMIN_TOKEN=s3cret
  strangler-proxy rollout get
  strangler-proxy rollout set users-migration 25
  strangler-proxy rollout disable users-migration`,
	}
	url := d.getenv("STRANGLER_ADMIN_URL")
	if url == "" {
		url = DefaultAdminURL
	}
	cmd.PersistentFlags().StringVar(&admin.URL, "admin", url, "admin API base URL ($STRANGLER_ADMIN_URL)")
	cmd.PersistentFlags().StringVar(&admin.Token, "token", "", "admin bearer token (default $STRANGLER_ADMIN_TOKEN)")
	cmd.AddCommand(NewCmdGet(d, admin, nil), NewCmdSet(d, admin, nil), NewCmdEnable(d, admin, true, nil), NewCmdEnable(d, admin, false, nil), NewCmdResume(d, admin, nil))
	return cmd
}

// GetOptions are the options of "rollout get".
type GetOptions struct {
	Deps   Deps        // streams, HTTP client, environment
	Admin  *AdminFlags // --admin and --token
	Flag   string      // empty: every flag
	AsJSON bool        // --json: print the admin API's JSON
}

// NewCmdGet returns "rollout get [FLAG]". runF replaces getRun in tests;
// nil means getRun.
func NewCmdGet(d Deps, admin *AdminFlags, runF func(context.Context, *GetOptions) error) *cobra.Command {
	opts := &GetOptions{Deps: d, Admin: admin}
	cmd := &cobra.Command{
		Use:   "get [FLAG]",
		Short: "Show every flag, or one flag in detail",
		Example: `  strangler-proxy rollout get
  strangler-proxy rollout get users-migration
  strangler-proxy rollout get users-migration --json --admin http://10.0.0.5:9901`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				opts.Flag = args[0]
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return getRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.AsJSON, "json", false, "print the admin API's JSON")
	return cmd
}

func getRun(ctx context.Context, opts *GetOptions) error {
	c := opts.Admin.client(opts.Deps)
	defer warnReplicas(ctx, c, opts.Deps)
	if opts.Flag == "" {
		flags, err := c.List(ctx)
		if err != nil {
			return err
		}
		if opts.AsJSON {
			return printJSON(opts.Deps.Out, toggles.FlagList{Flags: flags})
		}
		return printTable(opts.Deps.Out, flags)
	}
	f, err := c.Get(ctx, opts.Flag)
	if err != nil {
		return err
	}
	if opts.AsJSON {
		return printJSON(opts.Deps.Out, f)
	}
	return printFlag(opts.Deps.Out, f)
}

// SetOptions are the options of "rollout set".
type SetOptions struct {
	Deps       Deps        // streams, HTTP client, environment
	Admin      *AdminFlags // --admin and --token
	Flag       string      // FLAG
	Percentage float64     // PERCENT
}

// NewCmdSet returns "rollout set FLAG PERCENT".
func NewCmdSet(d Deps, admin *AdminFlags, runF func(context.Context, *SetOptions) error) *cobra.Command {
	opts := &SetOptions{Deps: d, Admin: admin}
	return &cobra.Command{
		Use:   "set FLAG PERCENT",
		Short: "Set the percentage of users a flag sends to its service",
		Example: `  strangler-proxy rollout set users-migration 5
  strangler-proxy rollout set users-migration 12.5%`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pct, err := parsePercent(args[1])
			if err != nil {
				return err
			}
			opts.Flag, opts.Percentage = args[0], pct
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return setRun(cmd.Context(), opts)
		},
	}
}

// parsePercent reads "25", "25%" or "12.5".
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("PERCENT %q: want a number from 0 to 100 with at most two decimals, e.g. 25 or 12.5", s)
	}
	return v, nil
}

func setRun(ctx context.Context, opts *SetOptions) error {
	c := opts.Admin.client(opts.Deps)
	before, err := c.Get(ctx, opts.Flag)
	if err != nil {
		return err
	}
	after, err := c.Update(ctx, opts.Flag, toggles.Patch{Percentage: &opts.Percentage})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.Deps.Out, "%s: %s → %s%s\n", after.Key, pct(before.Percentage), pct(after.Percentage), disabledNote(after))
	return err
}

func disabledNote(f toggles.FlagView) string {
	if f.Enabled {
		return ""
	}
	return " (the flag is disabled: everyone goes to the monolith until `rollout enable`)"
}

// EnableOptions are the options of "rollout enable" and "rollout disable".
type EnableOptions struct {
	Deps    Deps        // streams, HTTP client, environment
	Admin   *AdminFlags // --admin and --token
	Flag    string      // FLAG
	Enabled bool        // true for enable, false for disable
}

// NewCmdEnable returns "rollout enable FLAG" (enable true) or "rollout
// disable FLAG" (enable false, the kill switch).
func NewCmdEnable(d Deps, admin *AdminFlags, enable bool, runF func(context.Context, *EnableOptions) error) *cobra.Command {
	opts := &EnableOptions{Deps: d, Admin: admin, Enabled: enable}
	cmd := &cobra.Command{
		Use:     "enable FLAG",
		Short:   "Enable a flag: its percentage applies again",
		Example: `  strangler-proxy rollout enable users-migration`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Flag = args[0]
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return enableRun(cmd.Context(), opts)
		},
	}
	if !enable {
		cmd.Use = "disable FLAG"
		cmd.Short = "Disable a flag (kill switch): everyone goes to the monolith"
		cmd.Example = `  strangler-proxy rollout disable users-migration --token "$STRANGLER_ADMIN_TOKEN"`
	}
	return cmd
}

func enableRun(ctx context.Context, opts *EnableOptions) error {
	f, err := opts.Admin.client(opts.Deps).Update(ctx, opts.Flag, toggles.Patch{Enabled: &opts.Enabled})
	if err != nil {
		return err
	}
	state := "enabled at " + pct(f.Percentage)
	if !f.Enabled {
		state = "disabled: everyone goes to the monolith"
	}
	_, err = fmt.Fprintf(opts.Deps.Out, "%s: %s\n", f.Key, state)
	return err
}

func pct(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + "%" }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// segmentsText lists a flag's segments with their own percentages.
func segmentsText(f toggles.FlagView) string {
	if len(f.Segments) == 0 {
		return "-"
	}
	parts := make([]string, len(f.Segments))
	for i, s := range f.Segments {
		parts[i] = s
		if p, ok := f.SegmentPercentages[s]; ok {
			parts[i] += "(" + pct(p) + ")"
		}
	}
	return strings.Join(parts, ",")
}

func printTable(w io.Writer, flags []toggles.FlagView) error {
	if len(flags) == 0 {
		_, err := fmt.Fprintln(w, "no flags (the proxy's flags file is empty or missing)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tENABLED\tPERCENTAGE\tINCLUDED\tEXCLUDED\tSEGMENTS")
	for _, f := range flags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", f.Key, yesNo(f.Enabled), pct(f.Percentage), len(f.IncludeUsers), len(f.ExcludeUsers), segmentsText(f))
	}
	return tw.Flush()
}

func printFlag(w io.Writer, f toggles.FlagView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "flag:\t%s\n", f.Key)
	fmt.Fprintf(tw, "enabled:\t%s\n", yesNo(f.Enabled))
	fmt.Fprintf(tw, "percentage:\t%s\n", pct(f.Percentage))
	fmt.Fprintf(tw, "include_users:\t%s\n", listText(f.IncludeUsers))
	fmt.Fprintf(tw, "exclude_users:\t%s\n", listText(f.ExcludeUsers))
	fmt.Fprintf(tw, "segments:\t%s\n", segmentsText(f))
	if g := f.Guard; g != nil {
		fmt.Fprintf(tw, "guard:\t%s\n", g)
	}
	if r := f.Ramp; r != nil {
		steps := make([]string, len(r.Steps))
		for i, s := range r.Steps {
			steps[i] = pct(s)
		}
		fmt.Fprintf(tw, "ramp:\t%s every %s\n", strings.Join(steps, " → "), r.Interval)
	}
	if st := f.State; st != nil {
		if st.GuardSummary != "" {
			fmt.Fprintf(tw, "guard state:\t%s\n", st.GuardSummary)
		}
		if st.Ramp != nil {
			fmt.Fprintf(tw, "ramp state:\t%s\n", st.Ramp.String())
		}
	}
	return tw.Flush()
}

// ResumeOptions are the options of "rollout resume".
type ResumeOptions struct {
	Deps  Deps        // streams, HTTP client, environment
	Admin *AdminFlags // --admin and --token
	Flag  string      // FLAG
}

// NewCmdResume returns "rollout resume FLAG": after a guard trip, rearm the
// guard and let the ramp go on from the flag's current percentage.
func NewCmdResume(d Deps, admin *AdminFlags, runF func(context.Context, *ResumeOptions) error) *cobra.Command {
	opts := &ResumeOptions{Deps: d, Admin: admin}
	return &cobra.Command{
		Use:   "resume FLAG",
		Short: "Rearm a tripped guard and let a stopped ramp go on",
		Long: `Rearm a flag's tripped guard (its windows start empty) and let its stopped ramp go on:
the ramp's next step is the first one above the flag's current percentage.
A flag without a ramp keeps its percentage: raise it with rollout set.`,
		Example: `  strangler-proxy rollout get users-migration   # guard state: tripped
  strangler-proxy rollout resume users-migration`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Flag = args[0]
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return resumeRun(cmd.Context(), opts)
		},
	}
}

func resumeRun(ctx context.Context, opts *ResumeOptions) error {
	f, err := opts.Admin.client(opts.Deps).Resume(ctx, opts.Flag)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.Deps.Out, "%s: resumed at %s%s\n", f.Key, pct(f.Percentage), disabledNote(f))
	return err
}

func listText(xs []string) string {
	if len(xs) == 0 {
		return "-"
	}
	return strings.Join(xs, ", ")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("print JSON: %w", err)
	}
	return nil
}

// warnReplicas tells, on ErrOut, when the replicas of fleet mode do not
// all serve the same flags revision. A proxy with a flags file has no
// replica list: nothing is said.
func warnReplicas(ctx context.Context, c *AdminClient, d Deps) {
	list, ok, err := c.Replicas(ctx)
	if !ok {
		return
	}
	if err != nil {
		fmt.Fprintf(d.ErrOut, "warning: could not check that the replicas agree: %v\n", err)
		return
	}
	if msg := disagreement(list); msg != "" {
		fmt.Fprintln(d.ErrOut, msg)
	}
}

// disagreement describes replicas serving different revisions, or "".
func disagreement(list []Replica) string {
	if len(list) < 2 {
		return ""
	}
	var parts []string
	agree := true
	for _, r := range list {
		parts = append(parts, fmt.Sprintf("%s at %d", r.ID, r.Revision))
		if r.Revision != list[0].Revision {
			agree = false
		}
	}
	if agree {
		return ""
	}
	return "warning: the replicas serve different flags revisions (" + strings.Join(parts, ", ") +
		"): a change may still be spreading (run again in a few seconds), or a replica cannot reach the flags store (see strangler_flags_store_up)"
}
