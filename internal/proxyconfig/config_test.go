package proxyconfig

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const validYAML = `listen: 127.0.0.1:8080
monolith:
  url: http://127.0.0.1:8000
services:
  users:
    url: http://127.0.0.1:8001
    timeout: 2s
    health: {path: /health, interval: 5s}
routes:
  - prefix: /api/users
    service: users
`

// parse decodes and validates src, failing tb on anything but a
// *ValidationError.
func parse(tb testing.TB, src string) (*Config, *ValidationError) {
	tb.Helper()
	cfg, err := Parse(strings.NewReader(src), "/etc/strangler")
	if err == nil {
		return cfg, nil
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		tb.Fatalf("Parse: got error %v (%T), want a *ValidationError", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		tb.Fatalf("Parse: got %v, want an error wrapping ErrInvalid", err)
	}
	return nil, verr
}

func TestParseDefaults(t *testing.T) {
	cfg, verr := parse(t, validYAML)
	if verr != nil {
		t.Fatalf("Parse: got %v, want no error", verr)
	}
	s := cfg.Services["users"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"shutdown_timeout", cfg.ShutdownTimeout.D(), 30 * time.Second},
		{"access_log", cfg.AccessLog, true},
		{"max_replay_body", cfg.MaxReplayBody, Size(1 << 20)},
		{"server.max_header_bytes", cfg.Server.MaxHeaderBytes, Size(32 << 10)},
		{"server.max_uri_bytes", cfg.Server.MaxURIBytes, Size(8 << 10)},
		{"server.max_header_line_bytes", cfg.Server.MaxHeaderLineBytes, Size(8 << 10)},
		{"server.max_header_count", cfg.Server.MaxHeaderCount, 100},
		{"server.body_read_timeout", cfg.Server.BodyReadTimeout.D(), 60 * time.Second},
		{"server.request_timeout", cfg.Server.RequestTimeout.D(), 5 * time.Minute},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9901"},
		{"monolith.timeout", cfg.Monolith.Timeout.D(), 30 * time.Second},
		{"services.users.timeout", s.Timeout.D(), 2 * time.Second},
		{"services.users.breaker.consecutive_failures", s.Breaker.ConsecutiveFailures, DefaultConsecutiveFailures},
		{"services.users.breaker.open_for", s.Breaker.OpenFor.D(), DefaultOpenFor},
		{"services.users.health.interval", s.Health.Interval.D(), 5 * time.Second},
		{"routes[0].fallback", strings.Join(cfg.Routes[0].Fallback, ","), strings.Join(AllReasons(), ",")},
		{"anonymous", cfg.Anonymous, AnonymousMonolith},
		{"line of routes[0].service", cfg.Line("routes[0].service"), 11},
		{"max_body", cfg.MaxBody, Size(DefaultMaxBody)},
		{"routes[0].max_body", *cfg.Routes[0].MaxBody, Size(DefaultMaxBody)},
		{"server.escaped_slashes", cfg.Server.EscapedSlashes, EscapedSlashesReject},
		{"server.underscores_in_headers", cfg.Server.UnderscoresInHeaders, false},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestParseExampleFile(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "examples", "strangler.yaml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): got %v, want no error", path, err)
	}
	if got, want := len(cfg.Routes), 2; got != want {
		t.Fatalf("routes: got %d, want %d", got, want)
	}
}

func TestFlagsPath(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{"none", "", ""},
		{"relative", "flags.yaml", "/etc/strangler/flags.yaml"},
		{"absolute", "/var/lib/flags.yaml", "/var/lib/flags.yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := validYAML
			if c.file != "" {
				src += "flags_file: " + c.file + "\n"
			}
			cfg, verr := parse(t, src)
			if verr != nil {
				t.Fatalf("Parse: %v", verr)
			}
			if got := cfg.FlagsPath(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// invalidCases pairs a bad configuration with the problems it must report,
// as "line N: path" prefixes. They also seed FuzzDecode.
var invalidCases = []struct {
	name string
	src  string
	want []string
}{
	{
		name: "unknown key with its line",
		src:  validYAML + "lisen: 127.0.0.1:1\n",
		want: []string{"line 12: lisen: unknown key"},
	},
	{
		name: "server limits out of range",
		src: validYAML + `server:
  max_header_bytes: 4KiB
  max_uri_bytes: 8KiB
  max_header_line_bytes: 100
  max_header_count: 0
  body_read_timeout: 0s
  request_timeout: -1s
`,
		want: []string{
			"line 14: server.max_uri_bytes: must be at least 256 bytes and at most server.max_header_bytes",
			"line 15: server.max_header_line_bytes: must be at least 256 bytes and at most server.max_header_bytes",
			"line 16: server.max_header_count: must be at least 1",
			"line 17: server.body_read_timeout: must be a positive duration",
			"line 18: server.request_timeout: must be a positive duration",
		},
	},
	{
		name: "unknown nested key",
		src: `monolith:
  url: http://127.0.0.1:8000
  timout: 3s
`,
		want: []string{"line 3: monolith.timout: unknown key"},
	},
	{
		name: "unknown service and bad duration and duplicate prefix, all at once",
		src: `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001, timeout: fast}
routes:
  - prefix: /api/users
    service: users
  - prefix: /api/users/
    service: orders
`,
		want: []string{
			"line 3: services.users.timeout: invalid duration",
			"line 7: routes[1].prefix: \"/api/users/\" is also the prefix of routes[0] (line 5)",
			"line 8: routes[1].service: \"orders\" is not defined under services",
		},
	},
	{
		name: "bad URLs",
		src: `monolith: {url: "127.0.0.1:8000"}
services:
  users: {url: "ftp://x"}
`,
		want: []string{
			"line 1: monolith.url:",
			"line 3: services.users.url: \"ftp://x\" must start with http:// or https://",
		},
	},
	{
		name: "missing monolith",
		src:  "listen: 127.0.0.1:8080\n",
		want: []string{"monolith.url: is required"},
	},
	{
		name: "wrong types",
		src: `monolith: {url: http://127.0.0.1:8000}
access_log: maybe
services:
  users:
    url: http://127.0.0.1:8001
    breaker: {consecutive_failures: many}
`,
		want: []string{
			"line 2: access_log: cannot unmarshal",
			"line 6: services.users.breaker.consecutive_failures: cannot unmarshal",
		},
	},
	{
		name: "route fields",
		src: `monolith: {url: http://127.0.0.1:8000}
services:
  users: {url: http://127.0.0.1:8001}
routes:
  - prefix: api/users
    service: users
    methods: ["GE T"]
    fallback: [connect_error, always]
  - service: users
`,
		want: []string{
			"line 5: routes[0].prefix: \"api/users\" must start with /",
			"line 7: routes[0].methods[0]:",
			"line 8: routes[0].fallback[1]: \"always\" is not a reason",
			"line 9: routes[1].prefix: is required",
		},
	},
	{
		name: "request policies",
		src: `monolith: {url: http://127.0.0.1:8000}
server: {escaped_slashes: decode}
services:
  users: {url: http://127.0.0.1:8001}
routes:
  - {prefix: /api/users, service: users, max_body: lots}
`,
		want: []string{
			"line 2: server.escaped_slashes: \"decode\" is not a policy: use reject or unescape_and_forward",
			"line 6: routes[0].max_body:",
		},
	},
	{
		name: "identity header with '_'",
		src: `monolith: {url: http://127.0.0.1:8000}
identity:
  - header: X_User_ID
`,
		want: []string{
			"line 3: identity[0].header: \"X_User_ID\" has '_', and request headers with '_' are dropped",
		},
	},
	{
		name: "zero timeouts and breaker",
		src: `monolith: {url: http://127.0.0.1:8000, timeout: 0s}
services:
  users:
    url: http://127.0.0.1:8001
    breaker: {consecutive_failures: 0, open_for: 0s}
`,
		want: []string{
			"line 1: monolith.timeout: must be a positive duration",
			"line 5: services.users.breaker.consecutive_failures: must be at least 1",
			"line 5: services.users.breaker.open_for: must be a positive duration",
		},
	},
	{
		name: "identity and anonymous",
		src: `monolith: {url: http://127.0.0.1:8000}
identity:
  - header: X-User-ID
    cookie: uid
  - jwt: {claim: sub}
  - jwt: {hs256_secret_env: JWT_SECRET, rs256_public_key_file: key.pem}
  - jwt: {hs256_secret_env: "not a name"}
  - jwt: {rs256_public_key_file: key.pem}
anonymous: everyone
`,
		want: []string{
			"line 3: identity[0]: set exactly one",
			"line 5: identity[1].jwt: set exactly one of hs256_secret_env",
			"line 6: identity[2].jwt: set exactly one of hs256_secret_env",
			"line 7: identity[3].jwt.hs256_secret_env: \"not a name\" is not an environment variable name",
			"line 9: anonymous: \"everyone\" is not a policy",
		},
	},
	{
		name: "not YAML",
		src:  "listen: [unclosed\n",
		want: []string{"line "},
	},
	{
		name: "list where a mapping belongs",
		src:  "monolith: [http://127.0.0.1:8000]\n",
		want: []string{"line 1: monolith: want a mapping"},
	},
}

func TestParseInvalid(t *testing.T) {
	for _, c := range invalidCases {
		t.Run(c.name, func(t *testing.T) {
			_, verr := parse(t, c.src)
			if verr == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			var got []string
			for _, p := range verr.Problems {
				got = append(got, p.String())
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d problems %q, want %d: %q", len(got), got, len(c.want), c.want)
			}
			for i := range c.want {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("problem %d: got %q, want it to start with %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want Size
		err  bool
	}{
		{"4096", 4096, false},
		{"512KiB", 512 << 10, false},
		{"1MiB", 1 << 20, false},
		{"2 MB", 2000000, false},
		{"-1", 0, true},
		{"lots", 0, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseSize(c.in)
			if (err != nil) != c.err {
				t.Fatalf("error: got %v, want error %v", err, c.err)
			}
			if got != c.want {
				t.Errorf("got %d, want %d", got, c.want)
			}
		})
	}
}

// FuzzDecode checks that no input makes the decoder panic, and that a
// rejected input always comes with at least one problem naming a path.
func FuzzDecode(f *testing.F) {
	f.Add(validYAML)
	for _, c := range invalidCases {
		f.Add(c.src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse(strings.NewReader(src), ".")
		if err == nil {
			if cfg == nil {
				t.Fatal("got nil config and nil error")
			}
			return
		}
		var verr *ValidationError
		if !errors.As(err, &verr) {
			return // an I/O level error from the YAML reader
		}
		if len(verr.Problems) == 0 {
			t.Fatal("got a ValidationError without problems")
		}
		for _, p := range verr.Problems {
			if p.Path == "" || p.Message == "" {
				t.Fatalf("got problem %+v, want a path and a message", p)
			}
		}
	})
}

// TestRouteMaxBody pins that a route without max_body takes the top-level
// one, and that 0 (no limit) is kept as written.
func TestRouteMaxBody(t *testing.T) {
	cfg, verr := parse(t, `monolith: {url: http://127.0.0.1:8000}
max_body: 1MiB
services:
  users: {url: http://127.0.0.1:8001}
routes:
  - {prefix: /api/users, service: users}
  - {prefix: /api/uploads, service: users, max_body: 0}
  - {prefix: /api/batch, service: users, max_body: 16MiB}
`)
	if verr != nil {
		t.Fatalf("Parse: got %v, want no error", verr)
	}
	for i, want := range []Size{1 << 20, 0, 16 << 20} {
		if got := *cfg.Routes[i].MaxBody; got != want {
			t.Errorf("routes[%d].max_body: got %d, want %d", i, got, want)
		}
	}
}
