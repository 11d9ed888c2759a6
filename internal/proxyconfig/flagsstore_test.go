package proxyconfig

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func parseText(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return Parse(strings.NewReader("monolith: {url: \"http://127.0.0.1:8000\"}\n"+text), "/etc/strangler")
}

// problemsOf returns "path: message" for each problem of err.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want a *ValidationError, got %v", err)
	}
	var out []string
	for _, p := range verr.Problems {
		out = append(out, p.Path+": "+p.Message)
	}
	return out
}

func TestFlagsStoreForms(t *testing.T) {
	for _, text := range []string{
		"flags_store: {postgres: \"${FLAGS_DB}\"}\n",
		"flags_store: \"${FLAGS_DB}\"\n",
		"flags_store: postgres://proxy@db.internal:5432/strangler\n",
		"flags_store:\n  postgres: postgresql://db/x\n  cache_file: /var/cache/flags.json\n  replica_name: proxy-a\n",
	} {
		if _, err := parseText(t, text); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
	cfg, err := parseText(t, "flags_store: \"${FLAGS_DB}?sslmode=disable\"\n")
	if err != nil {
		t.Fatal(err)
	}
	url, err := cfg.FlagsStoreURL(func(k string) string { return map[string]string{"FLAGS_DB": "postgres://h/db"}[k] })
	if err != nil || url != "postgres://h/db?sslmode=disable" {
		t.Errorf("FlagsStoreURL = %q, %v", url, err)
	}
	if _, err := cfg.FlagsStoreURL(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "FLAGS_DB") {
		t.Errorf("unset variable: %v, want an error naming FLAGS_DB", err)
	}
	if got, want := cfg.FlagsCachePath(), filepath.Join("/etc/strangler", "flags-cache.json"); got != want {
		t.Errorf("default cache path %q, want %q (beside the config file)", got, want)
	}
}

func TestFlagsStoreProblemsNameTheField(t *testing.T) {
	for text, want := range map[string]string{
		"flags_store: {postgres: \"mysql://x/y\"}\n":                           "flags_store.postgres: is not a PostgreSQL URL",
		"flags_store: {postgres: \"\"}\n":                                      "flags_store.postgres: is required",
		"flags_store: {postgres: \"${1BAD}\"}\n":                               "flags_store.postgres: ${1BAD} does not name",
		"flags_store: {postgres: \"postgres://h/d\", url: x}\n":                "flags_store.url: unknown key",
		"flags_store: [a]\n":                                                   "flags_store: want a PostgreSQL URL or a mapping",
		"flags_store: {postgres: \"postgres://h/d\", replica_name: \"a b\"}\n": "flags_store.replica_name:",
	} {
		_, err := parseText(t, text)
		if err == nil {
			t.Errorf("%q: accepted", text)
			continue
		}
		if got := strings.Join(problemsOf(t, err), "\n"); !strings.Contains(got, want) {
			t.Errorf("%q: problems\n%s\nwant one containing %q", text, got, want)
		}
	}
}
