package mapping

import (
	"errors"
	"strings"
	"testing"
)

// TestConfigTwoWayKeys reads two_way and conflicts, and names the field of
// a conflict policy that does not exist.
func TestConfigTwoWayKeys(t *testing.T) {
	noEnv := func(string) string { return "" }
	cfg, err := Parse(strings.NewReader("source: s\ntarget: t\ntwo_way: true\nconflicts: target_wins\ntables: [{source: users}]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.TwoWay || cfg.Conflicts != "target_wins" {
		t.Errorf("got two_way %v, conflicts %q; want true, target_wins", cfg.TwoWay, cfg.Conflicts)
	}
	_, err = Parse(strings.NewReader("source: s\ntarget: t\nconflicts: newest\ntables: [{source: users}]\n"), noEnv)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "conflicts") || !strings.Contains(err.Error(), "last_update_wins") {
		t.Errorf("got %v, want a config error naming conflicts and the policies", err)
	}
}
