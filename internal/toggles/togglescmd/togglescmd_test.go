package togglescmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/toggles"
)

const testToken = "t0ken"

const testFlags = `segments:
  employees: {claim: email, suffix: "@example.com"}
flags:
  users-migration:
    percentage: 25
    include_users: [u-qa-1]
    segments: [employees]
    segment_percentages: {employees: 100}
  products-migration: {percentage: 0, enabled: false}
`

// adminProxy runs the admin handler over a real store behind the bearer
// check the proxy's admin listener does: writes need the token.
func adminProxy(tb testing.TB) (*httptest.Server, *toggles.Store) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "flags.yaml")
	if err := os.WriteFile(path, []byte(testFlags), 0o644); err != nil {
		tb.Fatal(err)
	}
	store, err := toggles.OpenStore(path, toggles.StoreOptions{})
	if err != nil {
		tb.Fatalf("OpenStore: %v", err)
	}
	h := toggles.NewAdminHandler(store, toggles.AdminOptions{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			switch r.Header.Get("Authorization") {
			case "":
				http.Error(w, `{"error":"token required"}`, http.StatusUnauthorized)
				return
			case "Bearer " + testToken:
			default:
				http.Error(w, `{"error":"bad token"}`, http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return srv, store
}

// run executes the rollout or flags command with args and an environment.
func run(tb testing.TB, env map[string]string, args ...string) (string, error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	d := Deps{Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return env[k] }}
	root := NewCmdRollout(d)
	if args[0] == "flags" {
		root = NewCmdFlags(d)
	}
	root.SetArgs(args[1:])
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	root.SilenceUsage = true
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// checkRun fails unless a command failed with wantErr in its message, or
// (wantErr empty) succeeded with every wantOut in its output.
func checkRun(tb testing.TB, out string, err error, wantOut []string, wantErr string) {
	tb.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			tb.Fatalf("error: got %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		tb.Fatalf("error: got %v, want none", err)
	}
	for _, w := range wantOut {
		if !strings.Contains(out, w) {
			tb.Fatalf("output: got\n%s\nwant it to contain %q", out, w)
		}
	}
}

func TestRolloutCommands(t *testing.T) {
	srv, store := adminProxy(t)
	env := map[string]string{"STRANGLER_ADMIN_URL": srv.URL, "STRANGLER_ADMIN_TOKEN": testToken}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantOut []string
		wantErr string
	}{
		{"get lists", []string{"rollout", "get"}, env,
			[]string{"FLAG", "products-migration  no", "users-migration     yes      25%", "employees(100%)"}, ""},
		{"get one", []string{"rollout", "get", "users-migration"}, env,
			[]string{"flag:", "users-migration", "include_users:  u-qa-1", "segments:       employees(100%)"}, ""},
		{"get unknown", []string{"rollout", "get", "nope"}, env, nil, `flag "nope" is not in the proxy's flags file`},
		{"set", []string{"rollout", "set", "users-migration", "40%"}, env, []string{"users-migration: 25% → 40%\n"}, ""},
		{"set on a disabled flag says so", []string{"rollout", "set", "products-migration", "5"}, env, []string{"0% → 5%", "the flag is disabled"}, ""},
		{"set out of range", []string{"rollout", "set", "users-migration", "150"}, env, nil, `PERCENT "150": want a number from 0 to 100`},
		{"set three decimals", []string{"rollout", "set", "users-migration", "1.234"}, env, nil, "400: flags.users-migration.percentage: 1.234 has more than two decimals"},
		{"set without token", []string{"rollout", "set", "users-migration", "5"}, map[string]string{"STRANGLER_ADMIN_URL": srv.URL}, nil, "401 unauthorized: pass the admin token with --token"},
		{"set with a wrong token flag", []string{"rollout", "set", "users-migration", "5", "--token", "guess"}, env, nil, "403 forbidden"},
		{"set unknown flag", []string{"rollout", "set", "nope", "5"}, env, nil, `404: flag "nope"`},
		{"disable", []string{"rollout", "disable", "users-migration"}, env, []string{"users-migration: disabled: everyone goes to the monolith\n"}, ""},
		{"enable", []string{"rollout", "enable", "products-migration"}, env, []string{"products-migration: enabled at 5%\n"}, ""},
		{"admin flag beats the environment", []string{"rollout", "get", "--admin", "http://127.0.0.1:1"}, env, nil, "is strangler-proxy running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, tt.env, tt.args...)
			checkRun(t, out, err, tt.wantOut, tt.wantErr)
		})
	}
	// The changes above are in force in the proxy's store and on disk.
	f, _ := store.Snapshot().Flag("users-migration")
	if f.Percentage != 40 || f.IsEnabled() {
		t.Fatalf("users-migration in force: got %v%% enabled=%t, want 40%% disabled", f.Percentage, f.IsEnabled())
	}
	reopened, err := toggles.OpenStore(store.Path(), toggles.StoreOptions{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if f, _ := reopened.Snapshot().Flag("products-migration"); f.Percentage != 5 || !f.IsEnabled() {
		t.Fatalf("products-migration after reopen: got %v%% enabled=%t, want 5%% enabled", f.Percentage, f.IsEnabled())
	}
}

func TestRolloutGetJSON(t *testing.T) {
	srv, _ := adminProxy(t)
	out, err := run(t, nil, "rollout", "get", "users-migration", "--json", "--admin", srv.URL)
	if err != nil {
		t.Fatalf("get --json: %v", err)
	}
	var f toggles.FlagView
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("output is not a flag's JSON: %v\n%s", err, out)
	}
	if f.Key != "users-migration" || f.Percentage != 25 {
		t.Fatalf("flag: got %+v, want users-migration at 25", f)
	}
}

func TestFlagsExport(t *testing.T) {
	dir := t.TempDir()
	flags := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(flags, []byte(testFlags), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("flags:\n  a: {percentage: 500}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{"flagd", []string{"flags", "export", "--format", "flagd", "--flags", flags}, `"fractional"`, ""},
		{"unknown format", []string{"flags", "export", "--format", "unleash", "--flags", flags}, "", `--format "unleash": the only format is flagd`},
		{"no flags file", []string{"flags", "export", "--format", "flagd"}, "", "--flags is required"},
		{"invalid flags file", []string{"flags", "export", "--flags", bad}, "", "flags.a.percentage: 500 is out of range 0..100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, nil, tt.args...)
			checkRun(t, out, err, []string{tt.wantOut}, tt.wantErr)
			if err == nil && !json.Valid([]byte(out)) {
				t.Fatalf("output: got\n%s\nwant JSON", out)
			}
		})
	}
	outFile := filepath.Join(dir, "flagd.json")
	if _, err := run(t, nil, "flags", "export", "--flags", flags, "-o", outFile); err != nil {
		t.Fatalf("export -o: %v", err)
	}
	if data, err := os.ReadFile(outFile); err != nil || !json.Valid(data) {
		t.Fatalf("written file: got %v, want valid JSON", err)
	}
}

func TestRolloutFlagDefaults(t *testing.T) {
	tests := []struct {
		name                 string
		env                  map[string]string
		wantAdmin, wantToken string
	}{
		{"no environment", nil, DefaultAdminURL, ""},
		// The token is read when the command runs, never shown by --help.
		{"environment", map[string]string{"STRANGLER_ADMIN_URL": "http://10.0.0.1:9901", "STRANGLER_ADMIN_TOKEN": "x"}, "http://10.0.0.1:9901", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCmdRollout(Deps{Getenv: func(k string) string { return tt.env[k] }})
			if got := cmd.PersistentFlags().Lookup("admin").DefValue; got != tt.wantAdmin {
				t.Errorf("--admin default: got %q, want %q", got, tt.wantAdmin)
			}
			if got := cmd.PersistentFlags().Lookup("token").DefValue; got != tt.wantToken {
				t.Errorf("--token default: got %q, want %q", got, tt.wantToken)
			}
		})
	}
}

// TestHelpHasExamples pins that every rollout and flags command's --help
// shows an example of its own command line.
func TestHelpHasExamples(t *testing.T) {
	d := Deps{Getenv: func(string) string { return "" }}
	for _, root := range []*cobra.Command{NewCmdRollout(d), NewCmdFlags(d)} {
		cmds := append([]*cobra.Command{root}, root.Commands()...)
		for _, c := range cmds {
			path := "strangler-proxy " + c.CommandPath()
			t.Run(c.CommandPath(), func(t *testing.T) {
				var out bytes.Buffer
				c.SetOut(&out)
				if err := c.Help(); err != nil {
					t.Fatalf("help: %v", err)
				}
				if !strings.Contains(out.String(), "Examples:\n  ") || !strings.Contains(out.String(), path) {
					t.Errorf("help of %s: got\n%s\nwant an Examples section with %q", c.CommandPath(), out.String(), path)
				}
			})
		}
	}
}
