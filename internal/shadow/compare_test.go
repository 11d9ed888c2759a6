package shadow

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/problem"
)

func jsonAnswer(body string) Answer {
	return Answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body)}
}

func diffStrings(ds []Diff) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.Path+": "+d.Monolith+" | "+d.Service)
	}
	return out
}

func mustIgnores(tb testing.TB, c Config) ignoreSet {
	tb.Helper()
	if ps := c.Validate("shadow"); len(ps) > 0 {
		tb.Fatalf("invalid config: %v", ps)
	}
	return c.ignores()
}

func TestCompareAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		monolith Answer
		service  Answer
		want     []string
	}{
		{
			name:     "key order and number format do not matter",
			monolith: jsonAnswer(`{"id": 1, "price": 10.50, "tags": ["a","b"], "n": null, "ok": true, "big": 1e2}`),
			service:  jsonAnswer(`{"ok":true,"n":null,"tags":["a","b"],"price":1.05e1,"id":1.0,"big":100}`),
		},
		{
			name:     "a field that differs is reported with its path",
			monolith: jsonAnswer(`{"id": 7, "user": {"name": "Ada", "roles": ["admin", "dev"]}}`),
			service:  jsonAnswer(`{"id": 7, "user": {"name": "Ada L.", "roles": ["admin", "ops"]}}`),
			want: []string{
				`$.user.name: "Ada" | "Ada L."`,
				`$.user.roles[1]: "dev" | "ops"`,
			},
		},
		{
			name:     "missing, extra and retyped members, array length",
			monolith: jsonAnswer(`{"a": 1, "b": "2", "list": [1, 2, 3], "odd key": {}}`),
			service:  jsonAnswer(`{"b": 2, "c": true, "list": [1, 2], "odd key": []}`),
			want: []string{
				`$.a: 1 | (absent)`,
				`$.b: "2" | 2`,
				`$.c: (absent) | true`,
				`$.list[2]: 3 | (absent)`,
				`$["odd key"]: {} | []`,
			},
		},
		{
			name:     "ignore_json_paths",
			cfg:      Config{IgnoreJSONPaths: []string{"$.updated_at", "$.items[*].updated_at", "$.meta"}},
			monolith: jsonAnswer(`{"updated_at": "t1", "items": [{"id": 1, "updated_at": "t1"}, {"id": 2, "updated_at": "t1"}], "meta": {"x": 1}}`),
			service:  jsonAnswer(`{"updated_at": "t2", "items": [{"id": 1, "updated_at": "t2"}, {"id": 3, "updated_at": "t2"}], "meta": {"x": 2}}`),
			want:     []string{`$.items[1].id: 2 | 3`},
		},
		{
			name:     "status and headers, minus ignored ones",
			cfg:      Config{IgnoreHeaders: []string{"etag"}},
			monolith: Answer{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}, "Etag": {"1"}, "Date": {"x"}, "Cache-Control": {"no-store"}, "X-Served-By": {"monolith"}}, Body: []byte("hi")},
			service:  Answer{Status: 201, Header: http.Header{"Content-Type": {"text/plain"}, "Etag": {"2"}, "Date": {"y"}, "X-Served-By": {"user-service"}}, Body: []byte("hi")},
			want: []string{
				`status: 200 | 201`,
				`header Cache-Control: no-store | (absent)`,
			},
		},
		{
			name:     "other bodies byte for byte",
			monolith: Answer{Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("<p>hello</p>")},
			service:  Answer{Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("<p>hallo</p>")},
			want:     []string{`body: 12 bytes, from byte 4: "ello</p>" | 12 bytes, from byte 4: "allo</p>"`},
		},
		{
			name:     "a service answer that is not JSON",
			monolith: jsonAnswer(`{"a": 1}`),
			service:  Answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte("oops")},
			want:     []string{`$: {"a":1} | not JSON: invalid character 'o' looking for beginning of value`},
		},
		{
			name:     "gzip is undone before comparing",
			monolith: jsonAnswer(`{"a": [1, 2]}`),
			service: Answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}},
				Body: gzipped(t, `{"a":[1,2.0]}`)},
			want: []string{`header Content-Encoding: (absent) | gzip`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diffStrings(compareAnswers(tc.monolith, tc.service, mustIgnores(t, tc.cfg), 1<<20))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got diffs\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func gzipped(tb testing.TB, s string) []byte {
	tb.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func TestSameNumber(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1", "1.0", true},
		{"1", "1e0", true},
		{"100", "1e2", true},
		{"1", "10e-1", true},
		{"0", "-0.0", true},
		{"0.1", "1E-1", true},
		{"12345678901234567890123", "12345678901234567890123.000", true},
		{"12345678901234567890123", "12345678901234567890124", false},
		{"1", "-1", false},
		{"1.5", "1.50001", false},
		{"0.1", "0.01", false},
		{"1e99999999999", "1e99999999999", true},
		{"1e99999999999", "2e99999999999", false},
	} {
		t.Run(tc.a+" vs "+tc.b, func(t *testing.T) {
			if got := sameNumber(tc.a, tc.b); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParsePattern(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // formatted back; empty for an error
		matches []seg
	}{
		{in: "$", want: "$", matches: nil},
		{in: "$.updated_at", want: "$.updated_at", matches: []seg{{kind: segKey, key: "updated_at"}}},
		{in: "$.items[*].updated_at", want: "$.items[*].updated_at",
			matches: []seg{{kind: segKey, key: "items"}, {kind: segIndex, index: 4}, {kind: segKey, key: "updated_at"}}},
		{in: `$["odd key"][0]`, want: `$["odd key"][0]`, matches: []seg{{kind: segKey, key: "odd key"}, {kind: segIndex}}},
		{in: `$.a.*`, want: `$.a[*]`, matches: []seg{{kind: segKey, key: "a"}, {kind: segKey, key: "b"}}},
		{in: "updated_at"},
		{in: "$..a"},
		{in: "$.a[x]"},
		{in: "$.a[-1]"},
		{in: `$["a]`},
		{in: "$.a["},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := parsePattern(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got pattern %v, want an error", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := formatPath(p, false); got != tc.want {
				t.Fatalf("got %s formatted, want %s", got, tc.want)
			}
			if !p.matches(tc.matches) {
				t.Fatalf("%s does not match %s, want a match", tc.in, formatPath(tc.matches, false))
			}
		})
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"$", "$.a", "$.items[*].updated_at", `$["odd key"][0]`, "$.a.*", `$["a\"b"]`, "$.a[", "$..a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePattern(s)
		if err != nil {
			return
		}
		again, err := parsePattern(formatPath(p, false))
		if err != nil {
			t.Fatalf("%q parsed, but its formatting %q does not: %v", s, formatPath(p, false), err)
		}
		if formatPath(again, false) != formatPath(p, false) {
			t.Fatalf("%q: got %q after a round trip, want %q", s, formatPath(again, false), formatPath(p, false))
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "valid", cfg: Config{Percentage: 100, IgnoreJSONPaths: []string{"$.updated_at"}, IgnoreHeaders: []string{"Date"}, NoiseCheck: true}},
		{name: "everything wrong", cfg: Config{Percentage: 101, IgnoreJSONPaths: []string{"$.ok", "updated_at"}, IgnoreHeaders: []string{"X-Ok", "Bad: header"}},
			want: []string{"s.percentage", "s.ignore_json_paths[1]", "s.ignore_headers[1]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := problem.Paths(tc.cfg.Validate("s")); !slices.Equal(got, tc.want) {
				t.Fatalf("got problems at %v, want at %v", tc.cfg.Validate("s"), tc.want)
			}
		})
	}
}
