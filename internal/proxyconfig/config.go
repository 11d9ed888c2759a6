package proxyconfig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/strangler-fig/strangler/internal/shadow"
)

// ErrInvalid is wrapped by every error that reports a bad configuration.
var ErrInvalid = errors.New("invalid configuration")

// Fallback reasons, as listed in a route's fallback key and in the
// strangler_fallbacks_total metric.
const (
	ReasonConnectError = "connect_error"
	ReasonTimeout      = "timeout"
	ReasonStatus5xx    = "status_5xx"
	ReasonBreakerOpen  = "breaker_open"
)

// AllReasons lists every fallback reason; it is a route's fallback list when
// the key is omitted.
func AllReasons() []string {
	return []string{ReasonConnectError, ReasonTimeout, ReasonStatus5xx, ReasonBreakerOpen}
}

// Anonymous visitor policies.
const (
	AnonymousMonolith     = "monolith"
	AnonymousStickyCookie = "sticky_cookie"
)

// Config is the whole strangler-proxy configuration file.
type Config struct {
	// Listen is the proxy's address, host:port.
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds how long in-flight requests may drain on SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// AccessLog writes one JSON line per request when true.
	AccessLog bool `yaml:"access_log"`
	// MaxReplayBody is the largest request body buffered so that it can be
	// replayed to the monolith (extension; default 1 MiB).
	MaxReplayBody Size `yaml:"max_replay_body"`
	// MaxBody is the largest request body accepted, for requests that
	// match no route and routes without a max_body of their own: a larger
	// one is answered 413 and never reaches an upstream in full; 0 means
	// no limit (extension; default DefaultMaxBody).
	MaxBody Size `yaml:"max_body"`
	// Server holds the proxy listener's limits (extension).
	Server ServerConfig `yaml:"server"`
	// Admin is the admin listener.
	Admin AdminConfig `yaml:"admin"`
	// Monolith is the legacy application every unrouted request goes to.
	Monolith UpstreamConfig `yaml:"monolith"`
	// Services are the new services, by name.
	Services map[string]*ServiceConfig `yaml:"services"`
	// Identity lists where a request's user id comes from, first match wins.
	Identity []IdentitySource `yaml:"identity"`
	// Anonymous is the policy for requests without a user id: monolith or
	// sticky_cookie.
	Anonymous string `yaml:"anonymous"`
	// FlagsFile is the rollout flags file, relative to the config file's folder.
	FlagsFile string `yaml:"flags_file"`
	// FlagsStore keeps the flags in PostgreSQL, shared by every replica
	// (fleet mode); see flagsstore.go.
	FlagsStore *FlagsStoreConfig `yaml:"flags_store"`
	// Routes send path prefixes to services.
	Routes []RouteConfig `yaml:"routes"`

	// dir is the folder of the file the config came from ("" if none).
	dir string
	// lines maps a field path to the line it was written on.
	lines map[string]int
}

// ServerConfig limits the proxy listener so that slow or greedy clients cannot
// pin it.
type ServerConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds the size of a request's head, request line
	// included (431 beyond).
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxURIBytes bounds a request line's target (414 beyond).
	MaxURIBytes Size `yaml:"max_uri_bytes"`
	// MaxHeaderLineBytes bounds one header line (431 beyond).
	MaxHeaderLineBytes Size `yaml:"max_header_line_bytes"`
	// MaxHeaderCount bounds the number of header lines (431 beyond).
	MaxHeaderCount int `yaml:"max_header_count"`
	// BodyReadTimeout bounds each wait for more of a request body (408,
	// or the connection closed, when it passes).
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// RequestTimeout bounds the time from a request's head to the end of
	// its body, however steadily it trickles in.
	RequestTimeout Duration `yaml:"request_timeout"`
	// HTTP1FastPath serves plain HTTP/1.1 requests with the proxy's own
	// lean server loop, and everything else with net/http's server (see
	// internal/h1serve); false serves everything with net/http's server.
	// It is read at start-up: a reload does not change it.
	HTTP1FastPath bool `yaml:"http1_fast_path"`

	// Request policies applied by the proxy's handler (package routing).

	// EscapedSlashes says what to do with a path holding an escaped slash
	// or backslash (%2F, %5C), which a route is matched against decoded
	// while the upstream gets it as written: EscapedSlashesReject (the
	// default) answers 400, EscapedSlashesUnescape forwards the decoded
	// path, the one the route was chosen on.
	EscapedSlashes string `yaml:"escaped_slashes"`
	// UnderscoresInHeaders keeps request headers with '_' in their name;
	// by default they are dropped, because CGI, WSGI and PHP backends read
	// X_User_ID as X-User-ID (nginx's underscores_in_headers).
	UnderscoresInHeaders bool `yaml:"underscores_in_headers"`
}

// Escaped slash policies, as in server.escaped_slashes.
const (
	EscapedSlashesReject   = "reject"
	EscapedSlashesUnescape = "unescape_and_forward"
)

// AdminConfig is the admin listener.
type AdminConfig struct {
	// Listen is the admin address, host:port (default 127.0.0.1:9901).
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable holding the bearer token every
	// admin write needs. No token means writes are refused.
	TokenEnv string `yaml:"token_env"`
}

// UpstreamConfig is an upstream's address and timeout.
type UpstreamConfig struct {
	// URL is the upstream's base URL: http or https, with a host.
	URL string `yaml:"url"`
	// Timeout bounds dialing plus waiting for response headers.
	Timeout Duration `yaml:"timeout"`
}

// ServiceConfig is a new service.
type ServiceConfig struct {
	// URL is the service's base URL.
	URL string `yaml:"url"`
	// Timeout bounds dialing plus waiting for response headers.
	Timeout Duration `yaml:"timeout"`
	// Health configures active health checks; an empty path turns them off.
	Health HealthConfig `yaml:"health"`
	// Breaker configures the service's circuit breaker.
	Breaker BreakerConfig `yaml:"breaker"`
}

// HealthConfig configures active health checks.
type HealthConfig struct {
	// Path is requested with GET; a 2xx or 3xx answer means healthy.
	Path string `yaml:"path"`
	// Interval is the time between two checks.
	Interval Duration `yaml:"interval"`
}

// BreakerConfig configures a service's circuit breaker.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// OpenFor is how long the breaker stays open before a probe.
	OpenFor Duration `yaml:"open_for"`
}

// IdentitySource is one place a user id may come from. Exactly one of its
// fields is set.
type IdentitySource struct {
	// Header names a request header holding the user id.
	Header string `yaml:"header"`
	// Cookie names a cookie holding the user id.
	Cookie string `yaml:"cookie"`
	// JWT reads the id from a verified token's claim.
	JWT *JWTSource `yaml:"jwt"`
}

// JWTSource reads a user id from a verified JSON Web Token. Exactly one of
// HS256SecretEnv and RS256PublicKeyFile is set.
type JWTSource struct {
	// Header carries the token, with or without a "Bearer " prefix
	// (default Authorization).
	Header string `yaml:"header"`
	// Claim holds the user id (default sub).
	Claim string `yaml:"claim"`
	// HS256SecretEnv names the environment variable holding the HMAC secret.
	HS256SecretEnv string `yaml:"hs256_secret_env"`
	// RS256PublicKeyFile is a PEM file with the RSA public key, relative to
	// the config file's folder.
	RS256PublicKeyFile string `yaml:"rs256_public_key_file"`
}

// RouteConfig sends a path prefix to a service.
type RouteConfig struct {
	// Name labels the route in metrics and logs (extension; default: the prefix).
	Name string `yaml:"name"`
	// Prefix is matched on path-segment boundaries; the longest match wins.
	Prefix string `yaml:"prefix"`
	// Service names an entry of services.
	Service string `yaml:"service"`
	// Flag names the rollout flag; empty sends every request to the service.
	Flag string `yaml:"flag"`
	// Methods, when set, are the only methods that may go to the service.
	Methods []string `yaml:"methods"`
	// StripPrefix removes the prefix from the path sent to the service.
	StripPrefix bool `yaml:"strip_prefix"`
	// Fallback lists the reasons that send a request to the monolith; nil
	// means all of them.
	Fallback []string `yaml:"fallback"`
	// ReplayUnsafe lets unsafe methods fall back on every listed reason, even
	// when the service may have received the request.
	ReplayUnsafe bool `yaml:"replay_unsafe"`
	// Shadow sends copies of monolith-bound requests to the service and
	// compares the answers (see package shadow).
	Shadow *shadow.Config `yaml:"shadow"`
	// MaxBody is the largest request body the route accepts, 0 for no
	// limit (extension); nil takes the top-level max_body.
	MaxBody *Size `yaml:"max_body"`
}

// Defaults not visible in Default's return value because they apply per
// entry of a map or list.
const (
	DefaultServiceTimeout      = 5 * time.Second
	DefaultHealthInterval      = 5 * time.Second
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = 30 * time.Second
)

// DefaultMaxBody is max_body's default: above nginx's 1 MiB
// client_max_body_size, for API requests that carry batches, and far below
// what an upload route needs, which sets its own.
const DefaultMaxBody = 4 << 20

// Default returns a configuration with every default filled in.
func Default() *Config {
	return &Config{
		Listen:          "127.0.0.1:8080",
		ShutdownTimeout: Duration(30 * time.Second),
		AccessLog:       true,
		MaxReplayBody:   1 << 20,
		MaxBody:         DefaultMaxBody,
		Server: ServerConfig{
			ReadHeaderTimeout:  Duration(10 * time.Second),
			IdleTimeout:        Duration(120 * time.Second),
			MaxHeaderBytes:     32 << 10,
			MaxURIBytes:        8 << 10,
			MaxHeaderLineBytes: 8 << 10,
			MaxHeaderCount:     100,
			BodyReadTimeout:    Duration(60 * time.Second),
			RequestTimeout:     Duration(5 * time.Minute),
			HTTP1FastPath:      true,
			EscapedSlashes:     EscapedSlashesReject,
		},
		Admin:     AdminConfig{Listen: "127.0.0.1:9901"},
		Monolith:  UpstreamConfig{Timeout: Duration(30 * time.Second)},
		Anonymous: AnonymousMonolith,
	}
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f, filepath.Dir(path))
	var verr *ValidationError
	if errors.As(err, &verr) {
		verr.File = path
		return nil, verr
	}
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML from r on top of Default and validates the result.
// dir is the folder relative paths in the file are relative to.
func Parse(r io.Reader, dir string) (*Config, error) {
	cfg := Default()
	cfg.dir = dir
	derr := cfg.Decode(r)
	var verr *ValidationError
	if derr != nil && !errors.As(derr, &verr) {
		return nil, derr
	}
	if verr != nil && verr.Problems[0].Path == "(file)" {
		// Not YAML, or empty: validating the defaults would only add noise.
		return nil, verr
	}
	if err := cfg.Validate(); err != nil {
		var more *ValidationError
		errors.As(err, &more)
		verr = merge(verr, more)
	}
	if verr != nil {
		sort.SliceStable(verr.Problems, func(i, j int) bool { return lineKey(verr.Problems[i]) < lineKey(verr.Problems[j]) })
		return nil, verr
	}
	return cfg, nil
}

// Dir is the folder of the file the configuration was loaded from; relative
// paths in it (flags_file) are relative to this folder.
func (c *Config) Dir() string { return c.dir }

// FlagsPath is flags_file resolved against the config file's folder, or "".
func (c *Config) FlagsPath() string {
	if c.FlagsFile == "" || filepath.IsAbs(c.FlagsFile) {
		return c.FlagsFile
	}
	return filepath.Join(c.dir, c.FlagsFile)
}

// Line reports the line a field path (such as "routes[1].service") was
// written on, or 0 when unknown.
func (c *Config) Line(path string) int { return c.lines[path] }

// RouteLabel is the route's label in metrics and logs: its name, else its
// prefix.
func (r *RouteConfig) RouteLabel() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Prefix
}

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the field path, such as "services.users.timeout".
	Path string
	// Line is the YAML line, 0 when unknown.
	Line int
	// Message says what is wrong and what to do.
	Message string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Path, p.Message)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Message)
}

// ValidationError lists every problem found in a configuration. It wraps
// ErrInvalid.
type ValidationError struct {
	// File is the configuration file, when known.
	File string
	// Problems in the order of the file.
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	fmt.Fprintf(&b, " (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// merge joins two lists, leaving out b's problems on a path a already reports
// or on a parent of it (a bad duration should not also be reported as a
// missing one).
func merge(a, b *ValidationError) *ValidationError {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	seen := make(map[string]bool, len(a.Problems))
	for _, p := range a.Problems {
		seen[p.Path] = true
	}
	for _, p := range b.Problems {
		covered := false
		for q := p.Path; q != "" && !covered; q = parent(q) {
			covered = seen[q]
		}
		if !covered {
			a.Problems = append(a.Problems, p)
		}
	}
	return a
}
