package origins

import "testing"

func TestNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{ToTarget("users"), "datasync_users_to_target"},
		{ToSource("users"), "datasync_users_to_source"},
		{Repair(ToTarget("users")), "datasync_users_to_target_repair"},
		{Repair(ToSource("users")), "datasync_users_to_source_repair"},
		// Sync names may hold "_to_" and "_repair" themselves.
		{Repair(ToTarget("a_to_b")), "datasync_a_to_b_to_target_repair"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// No sync's own origin is another's repair origin, nor is one.
	for _, name := range []string{"users", "users_repair", "a_to_b", "repair"} {
		for _, o := range []string{ToTarget(name), ToSource(name)} {
			if IsRepair(o) {
				t.Errorf("%s: sync origin %s counts as a repair origin", name, o)
			}
			if !IsRepair(Repair(o)) {
				t.Errorf("%s: repair origin %s does not count as one", name, Repair(o))
			}
		}
	}
}
