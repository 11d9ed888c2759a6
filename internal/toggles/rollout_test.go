package toggles

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const thirtyPercent = "flags:\n  users-migration: {percentage: 30}\n"

// toService decides for user u and reports whether they go to the service.
func toService(tb testing.TB, d *Decider, flag, user string) bool {
	tb.Helper()
	return d.Decide(context.Background(), flag, Identity{UserID: user}, nil).Service
}

func TestThirtyPercentOfTwoThousandUsers(t *testing.T) {
	d := newTestDecider(t, openStore(t, thirtyPercent, StoreOptions{}), nil)
	in := 0
	for i := range 2000 {
		if toService(t, d, "users-migration", fmt.Sprintf("user-%d", i)) {
			in++
		}
	}
	got := float64(in) / 20
	if math.Abs(got-30) > 3 {
		t.Fatalf("share to the service: got %.1f %%, want 30 ± 3 %%", got)
	}
}

func TestOneUserTwentyTimesGetsOneDecision(t *testing.T) {
	d := newTestDecider(t, openStore(t, thirtyPercent, StoreOptions{}), nil)
	for i := range 50 {
		user := fmt.Sprintf("user-%d", i)
		first := d.Decide(context.Background(), "users-migration", Identity{UserID: user}, nil)
		for range 19 {
			if got := d.Decide(context.Background(), "users-migration", Identity{UserID: user}, nil); got != first {
				t.Fatalf("user %s: got %+v, want the first decision %+v", user, got, first)
			}
		}
	}
}

func TestRaisingThirtyToSixtyKeepsEveryUserIn(t *testing.T) {
	s := openStore(t, thirtyPercent, StoreOptions{})
	d := newTestDecider(t, s, nil)
	var wasIn []string
	for i := range 2000 {
		if u := fmt.Sprintf("user-%d", i); toService(t, d, "users-migration", u) {
			wasIn = append(wasIn, u)
		}
	}
	if _, err := s.Update("users-migration", Patch{Percentage: ptr(60.0)}, "test"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	for _, u := range wasIn {
		if !toService(t, d, "users-migration", u) {
			t.Fatalf("user %s: got the monolith at 60 %%, want the service it had at 30 %%", u)
		}
	}
	in := 0
	for i := range 2000 {
		if toService(t, d, "users-migration", fmt.Sprintf("user-%d", i)) {
			in++
		}
	}
	if got := float64(in) / 20; math.Abs(got-60) > 3 {
		t.Fatalf("share at 60 %%: got %.1f %%, want 60 ± 3 %%", got)
	}
}

func TestDisableSendsNoOneToTheService(t *testing.T) {
	s := openStore(t, "flags:\n  users-migration: {percentage: 100, include_users: [u-qa-1]}\n", StoreOptions{})
	d := newTestDecider(t, s, nil)
	if _, err := s.Update("users-migration", Patch{Enabled: ptr(false)}, "test"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	for _, u := range []string{"u-qa-1", "user-1", "user-2", "user-3"} {
		got := d.Decide(context.Background(), "users-migration", Identity{UserID: u}, nil)
		if got.Service || got.Reason != string(RuleDisabled) {
			t.Fatalf("user %s when disabled: got %+v, want the monolith for reason disabled", u, got)
		}
	}
}

func TestEmployeeSegmentAtHundredWithFlagAtZero(t *testing.T) {
	s := openStore(t, `segments:
  employees: {claim: email, suffix: "@example.com"}
flags:
  users-migration:
    percentage: 0
    segments: [employees]
    segment_percentages: {employees: 100}
`, StoreOptions{})
	d := newTestDecider(t, s, nil)
	for i := range 500 {
		employee := i%3 == 0
		email := fmt.Sprintf("person%d@customer.org", i)
		if employee {
			email = fmt.Sprintf("person%d@example.com", i)
		}
		id := Identity{UserID: fmt.Sprintf("u-%d", i), Claims: map[string]any{"email": email}}
		got := d.Decide(context.Background(), "users-migration", id, nil)
		if got.Service != employee {
			t.Fatalf("%s: got service=%t (%s), want %t", email, got.Service, got.Reason, employee)
		}
	}
}

func TestRulesAndReasons(t *testing.T) {
	s := openStore(t, `segments:
  beta: {header: X-Beta-Tester, equals: "true"}
flags:
  open: {percentage: 100, include_users: [u-in], exclude_users: [u-out]}
  closed: {percentage: 0, include_users: [u-in]}
  off: {percentage: 100, enabled: false}
  beta-only: {percentage: 100, segments: [beta]}
`, StoreOptions{})
	d := newTestDecider(t, s, nil)
	beta := http.Header{"X-Beta-Tester": {"true"}}
	tests := []struct {
		name, flag, user string
		h                http.Header
		service          bool
		reason           string
	}{
		{"split in", "open", "u-1", nil, true, "split"},
		{"split out", "closed", "u-1", nil, false, "split"},
		{"excluded beats the percentage", "open", "u-out", nil, false, "excluded"},
		{"included beats the percentage", "closed", "u-in", nil, true, "included"},
		{"disabled", "off", "u-1", nil, false, "disabled"},
		{"missing flag", "nope", "u-1", nil, false, "flag_not_found"},
		{"anonymous", "open", "", nil, false, "no_user"},
		{"header segment member", "beta-only", "u-1", beta, true, "split"},
		{"not in the segment", "beta-only", "u-1", http.Header{"X-Beta-Tester": {"false"}}, false, "not_eligible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := d.Decide(context.Background(), tt.flag, Identity{UserID: tt.user}, tt.h)
			if got.Service != tt.service || got.Reason != tt.reason {
				t.Fatalf("got service=%t reason=%s, want service=%t reason=%s", got.Service, got.Reason, tt.service, tt.reason)
			}
			if got.HasBucket && got.Bucket != Bucket(tt.flag, tt.user) {
				t.Fatalf("bucket: got %d, want %d", got.Bucket, Bucket(tt.flag, tt.user))
			}
		})
	}
}

func TestProviderReasonsThroughOpenFeature(t *testing.T) {
	s := openStore(t, "flags:\n  open: {percentage: 100, include_users: [u-in]}\n  off: {enabled: false}\n", StoreOptions{})
	client, shutdown, err := NewClient(context.Background(), s)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	tests := []struct {
		name, flag, user string
		value            bool
		reason           openfeature.Reason
		code             openfeature.ErrorCode
	}{
		{"split", "open", "u-1", true, openfeature.SplitReason, ""},
		{"targeting match", "open", "u-in", true, openfeature.TargetingMatchReason, ""},
		{"disabled", "off", "u-1", false, openfeature.DisabledReason, ""},
		{"missing flag", "nope", "u-1", false, openfeature.ErrorReason, openfeature.FlagNotFoundCode},
		{"no targeting key", "open", "", false, openfeature.ErrorReason, openfeature.TargetingKeyMissingCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := client.BooleanValueDetails(context.Background(), tt.flag, false, openfeature.NewEvaluationContext(tt.user, nil))
			if got.Value != tt.value || got.Reason != tt.reason || got.ErrorCode != tt.code {
				t.Fatalf("got value=%t reason=%s code=%s, want value=%t reason=%s code=%s",
					got.Value, got.Reason, got.ErrorCode, tt.value, tt.reason, tt.code)
			}
		})
	}
	if _, err := client.StringValueDetails(context.Background(), "open", "x", openfeature.NewEvaluationContext("u-1", nil)); err == nil {
		t.Fatalf("string evaluation of a boolean flag: got no error, want TYPE_MISMATCH")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	s := openStore(t, "flags:\n  a: {percentage: 12.5}\n  b: {percentage: 50, enabled: false}\n", StoreOptions{OnChange: m.SetPercentages})
	m.SetPercentages(s.Snapshot())
	d := newTestDecider(t, s, m)
	d.Decide(context.Background(), "a", Identity{UserID: "u-in"}, nil)
	d.Decide(context.Background(), "b", Identity{UserID: "u-1"}, nil)
	d.Decide(context.Background(), "b", Identity{UserID: "u-2"}, nil)
	if got := testutil.ToFloat64(m.percentage.WithLabelValues("a")); got != 12.5 {
		t.Errorf("percentage{flag=a}: got %v, want 12.5", got)
	}
	if got := testutil.ToFloat64(m.percentage.WithLabelValues("b")); got != 0 {
		t.Errorf("percentage{flag=b} (disabled): got %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("b", "monolith", "disabled")); got != 2 {
		t.Errorf("decisions{b,monolith,disabled}: got %v, want 2", got)
	}
	if _, err := s.Update("a", Patch{Percentage: ptr(40.0)}, "test"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got := testutil.ToFloat64(m.percentage.WithLabelValues("a")); got != 40 {
		t.Errorf("percentage{flag=a} after Update: got %v, want 40", got)
	}
	if n, err := testutil.GatherAndCount(reg, "strangler_rollout_decisions_total"); err != nil || n != 2 {
		t.Errorf("decision series gathered: got %d (%v), want 2", n, err)
	}
}

func TestExplain(t *testing.T) {
	snap := openStore(t, `segments:
  employees: {claim: email, suffix: "@example.com"}
flags:
  plain: {percentage: 41.15, exclude_users: [u-out], include_users: [u-in]}
  staff: {percentage: 0, segments: [employees], segment_percentages: {employees: 100}}
  off: {enabled: false}
`, StoreOptions{}).Snapshot()
	employee := map[string]any{"email": "a@example.com"}
	tests := []struct {
		name, flag, user string
		claims           map[string]any
		want             string
	}{
		// Buckets computed outside this package as for bucketVectors:
		// plain+u-3 is 4114, plain+u-1 is 9785.
		{"split in", "plain", "u-3", nil, "bucket 4114 is below 4115 (41.15%, the flag's percentage): the service"},
		{"split out", "plain", "u-1", nil, "bucket 9785 is not below 4115 (41.15%, the flag's percentage): the monolith"},
		{"segment's own percentage", "staff", "u-1", employee, "(100%, segment employees's own percentage): the service"},
		{"not eligible", "staff", "u-1", nil, "the user is in none of the flag's segments: the monolith"},
		{"excluded", "plain", "u-out", nil, "the user is in exclude_users: the monolith"},
		{"included", "plain", "u-in", nil, "the user is in include_users: the service"},
		{"disabled", "off", "u-1", nil, "the flag is disabled: the monolith"},
		{"missing", "nope", "u-1", nil, "the flag is not in the flags file: the monolith"},
		{"anonymous", "plain", "", nil, "the request has no user id: the monolith"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := snap.EvaluateFor(tt.flag, Identity{UserID: tt.user, Claims: tt.claims}, nil).Explain()
			if !strings.HasSuffix(got, tt.want) {
				t.Fatalf("got %q, want it to end with %q", got, tt.want)
			}
		})
	}
}

func TestRolloutWiresThePieces(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var reloads []error
	var mu sync.Mutex
	path := writeFlags(t, "flags:\n  users-migration: {percentage: 0, include_users: [u-qa-1]}\n")
	r, err := Start(context.Background(), Config{
		FlagsFile:    path,
		Identity:     []IdentitySource{{Header: "X-User-ID"}, {JWT: &JWTSource{HS256SecretEnv: "JWT_SECRET"}}},
		Anonymous:    AnonymousStickyCookie,
		Getenv:       func(string) string { return testSecret },
		Registerer:   reg,
		OnReload:     func(err error) { mu.Lock(); reloads = append(reloads, err); mu.Unlock() },
		PollInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	decide := func(user string) (Decision, Identity) {
		req := httptest.NewRequest(http.MethodGet, "/api/users", nil)
		if user != "" {
			req.Header.Set("X-User-ID", user)
		}
		return r.Decide(req, "users-migration")
	}
	if d, _ := decide("u-qa-1"); !d.Service || d.Reason != "included" {
		t.Fatalf("u-qa-1: got %+v, want the service (included)", d)
	}
	if d, id := decide(""); d.Service || id.Cookie() == nil || d.UserID != id.UserID {
		t.Fatalf("anonymous: got %+v with cookie %v, want a sticky id, bucketed, and a cookie to set", d, id.Cookie())
	}
	forged := httptest.NewRequest(http.MethodGet, "/", nil)
	forged.Header.Set("Authorization", "Bearer "+signHS(t, jwt.SigningMethodHS256, []byte("guess"), jwt.MapClaims{"sub": "u-qa-1"}))
	if d, _ := r.Decide(forged, "users-migration"); d.UserID == "u-qa-1" {
		t.Fatalf("forged JWT: got user %q, want it not believed", d.UserID)
	}
	if got := testutil.ToFloat64(r.metrics.jwtFailures.WithLabelValues(JWTBadSignature)); got != 1 {
		t.Fatalf("jwt failures{bad_signature}: got %v, want 1", got)
	}

	// The watcher picks up an edit of the file; the gauge follows.
	replaceFile(t, path, "flags:\n  users-migration: {percentage: 100}\n")
	waitFor(t, "the edit to be in force", func() bool { d, _ := decide("u-1"); return d.Service })
	waitFor(t, "the percentage gauge", func() bool {
		return testutil.ToFloat64(r.metrics.percentage.WithLabelValues("users-migration")) == 100
	})
	mu.Lock()
	if len(reloads) != 1 || reloads[0] != nil {
		t.Fatalf("reload reports: got %v, want one success", reloads)
	}
	mu.Unlock()

	res, _ := r.Explain(httptest.NewRequest(http.MethodGet, "/", nil), "users-migration")
	if res.Rule != RuleSplit {
		t.Fatalf("Explain of an anonymous sticky visitor: got %+v, want a split", res)
	}
	if err := r.SetIdentity([]IdentitySource{{JWT: &JWTSource{HS256SecretEnv: "UNSET"}}}, "", "", func(string) string { return "" }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetIdentity with a missing secret: got %v, want ErrInvalid", err)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := Start(context.Background(), Config{FlagsFile: writeFlags(t, "flags:\n  a: {percentage: 500}\n"), Registerer: reg})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Start with an invalid flags file: got %v, want ErrInvalid", err)
	}
	// Nothing was left registered: a second start with a good file works.
	r, err := Start(context.Background(), Config{FlagsFile: writeFlags(t, "flags:\n  a: {percentage: 5}\n"), Registerer: reg})
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
