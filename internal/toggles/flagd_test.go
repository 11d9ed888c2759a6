package toggles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// jsonLogic evaluates the JSONLogic subset ExportFlagd writes, with flagd's
// fractional operation, against an evaluation context. It is a test oracle
// written from the JSONLogic and flagd documentation, independent of
// Snapshot.Evaluate.
func jsonLogic(tb testing.TB, flagKey string, rule any, ctx map[string]any) any {
	tb.Helper()
	m, ok := rule.(map[string]any)
	if !ok {
		return rule
	}
	if len(m) != 1 {
		tb.Fatalf("rule with %d operators: %v", len(m), m)
	}
	for op, raw := range m {
		args, _ := raw.([]any)
		eval := func(i int) any { return jsonLogic(tb, flagKey, args[i], ctx) }
		switch op {
		case "var":
			name := raw.(string)
			if name == "$flagd.flagKey" {
				return flagKey
			}
			var cur any = ctx
			for _, part := range strings.Split(name, ".") {
				mm, _ := cur.(map[string]any)
				cur = mm[part]
			}
			return cur
		case "if":
			for i := 0; i+1 < len(args); i += 2 {
				if c := eval(i); c == true {
					return eval(i + 1)
				}
			}
			if len(args)%2 == 1 {
				return eval(len(args) - 1)
			}
			return nil
		case "in":
			list, _ := eval(1).([]any)
			return slices.Contains(list, eval(0))
		case "==":
			return eval(0) == eval(1)
		case "starts_with":
			s, _ := eval(0).(string)
			return strings.HasPrefix(s, eval(1).(string))
		case "ends_with":
			s, _ := eval(0).(string)
			return strings.HasSuffix(s, eval(1).(string))
		case "cat":
			var b strings.Builder
			for i := range args {
				fmt.Fprint(&b, eval(i))
			}
			return b.String()
		case "fractional":
			key := eval(0).(string)
			var total uint64
			for _, d := range args[1:] {
				total += uint64(d.([]any)[1].(float64))
			}
			bucket := uint64(murmur3x86_32([]byte(key), 0)) * total >> 32
			var sum uint64
			for _, d := range args[1:] {
				pair := d.([]any)
				sum += uint64(pair[1].(float64))
				if bucket < sum {
					return pair[0]
				}
			}
			return nil
		}
		tb.Fatalf("unknown operator %q", op)
	}
	return nil
}

func TestExportFlagdSendsEveryUserWhereTheProxyDoes(t *testing.T) {
	file, err := Parse([]byte(`segments:
  employees: {claim: email, suffix: "@example.com"}
  beta: {header: X-Beta-Tester, equals: "true"}
  eu: {claim: region, in: [de, fr]}
  staff: {claim: email, prefix: "staff-"}
flags:
  plain: {percentage: 37.5}
  lists: {percentage: 50, include_users: [u-1, u-2], exclude_users: [u-3, u-4]}
  segmented:
    percentage: 10
    segments: [employees, beta, eu, staff]
    segment_percentages: {employees: 100, eu: 0}
  off: {percentage: 100, enabled: false}
  all: {percentage: 100}
  none: {percentage: 0}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	snap, err := NewSnapshot(file)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	data, err := ExportFlagd(file)
	if err != nil {
		t.Fatalf("ExportFlagd: %v", err)
	}
	var out struct {
		Schema string `json:"$schema"`
		Flags  map[string]struct {
			State          string          `json:"state"`
			Variants       map[string]bool `json:"variants"`
			DefaultVariant string          `json:"defaultVariant"`
			Targeting      any             `json:"targeting"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("exported JSON: %v", err)
	}
	if out.Schema != FlagdSchema {
		t.Fatalf("$schema: got %q, want %q", out.Schema, FlagdSchema)
	}
	emails := []string{"a@example.com", "b@customer.org", "staff-c@customer.org"}
	regions := []string{"de", "us"}
	for _, key := range snap.FlagKeys() {
		t.Run(key, func(t *testing.T) {
			ff := out.Flags[key]
			for i := range 600 {
				user := fmt.Sprintf("u-%d", i)
				claims := map[string]any{"email": emails[i%3], "region": regions[i%2]}
				h := http.Header{}
				headers := map[string]any{}
				if i%5 == 0 {
					h.Set("X-Beta-Tester", "true")
					headers["X-Beta-Tester"] = "true"
				}
				ctx := map[string]any{"targetingKey": user, "email": claims["email"], "region": claims["region"], "headers": headers}
				variant := ff.DefaultVariant
				if ff.Targeting != nil {
					if v, ok := jsonLogic(t, key, ff.Targeting, ctx).(string); ok {
						variant = v
					}
				}
				var buf [8]string
				want := snap.Evaluate(key, user, snap.AppendMemberships(buf[:0], key, claims, h))
				if got := ff.Variants[variant]; got != want.Service {
					t.Fatalf("user %s (%v): flagd gives %s, want service=%t (%s)", user, ctx, variant, want.Service, want.Rule)
				}
			}
		})
	}
}
