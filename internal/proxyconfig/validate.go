package proxyconfig

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

var (
	serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	flagKey     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	methodToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// applyDefaults fills in the defaults of map and list entries for keys the
// file does not set (an explicit zero stays, so that Validate reports it).
func (c *Config) applyDefaults() {
	for name, s := range c.Services {
		if s == nil {
			s = &ServiceConfig{}
			c.Services[name] = s
		}
		p := "services." + name
		if !c.set(p + ".timeout") {
			s.Timeout = Duration(DefaultServiceTimeout)
		}
		if s.Health.Path != "" && !c.set(p+".health.interval") {
			s.Health.Interval = Duration(DefaultHealthInterval)
		}
		if !c.set(p + ".breaker.consecutive_failures") {
			s.Breaker.ConsecutiveFailures = DefaultConsecutiveFailures
		}
		if !c.set(p + ".breaker.open_for") {
			s.Breaker.OpenFor = Duration(DefaultOpenFor)
		}
	}
	for i := range c.Identity {
		if j := c.Identity[i].JWT; j != nil {
			if j.Header == "" {
				j.Header = "Authorization"
			}
			if j.Claim == "" {
				j.Claim = "sub"
			}
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Fallback == nil {
			r.Fallback = AllReasons()
		}
		for k, m := range r.Methods {
			r.Methods[k] = strings.ToUpper(m)
		}
		if r.MaxBody == nil {
			mb := c.MaxBody
			r.MaxBody = &mb
		}
	}
}

func (c *Config) set(path string) bool { return c.lines[path] > 0 }

// Validate checks the configuration and returns every problem at once in a
// *ValidationError, or nil. It fills in per-entry defaults first.
func (c *Config) Validate() error {
	c.applyDefaults()
	v := &validator{c: c}
	v.hostPort("listen", c.Listen)
	v.nonNegative("shutdown_timeout", c.ShutdownTimeout)
	if c.MaxReplayBody < 0 {
		v.add("max_replay_body", "must not be negative")
	}
	if c.MaxBody < 0 {
		v.add("max_body", "must not be negative (0 means no limit)")
	}
	switch c.Server.EscapedSlashes {
	case EscapedSlashesReject, EscapedSlashesUnescape:
	default:
		v.add("server.escaped_slashes", fmt.Sprintf("%q is not a policy: use %s or %s", c.Server.EscapedSlashes, EscapedSlashesReject, EscapedSlashesUnescape))
	}
	v.positive("server.read_header_timeout", c.Server.ReadHeaderTimeout)
	v.positive("server.idle_timeout", c.Server.IdleTimeout)
	if c.Server.MaxHeaderBytes < 1024 {
		v.add("server.max_header_bytes", "must be at least 1KiB")
	}
	if c.Server.MaxURIBytes < 256 || c.Server.MaxURIBytes > c.Server.MaxHeaderBytes {
		v.add("server.max_uri_bytes", "must be at least 256 bytes and at most server.max_header_bytes")
	}
	if c.Server.MaxHeaderLineBytes < 256 || c.Server.MaxHeaderLineBytes > c.Server.MaxHeaderBytes {
		v.add("server.max_header_line_bytes", "must be at least 256 bytes and at most server.max_header_bytes")
	}
	if c.Server.MaxHeaderCount < 1 {
		v.add("server.max_header_count", "must be at least 1")
	}
	v.positive("server.body_read_timeout", c.Server.BodyReadTimeout)
	v.positive("server.request_timeout", c.Server.RequestTimeout)
	v.hostPort("admin.listen", c.Admin.Listen)
	if c.Admin.TokenEnv != "" && !envName.MatchString(c.Admin.TokenEnv) {
		v.add("admin.token_env", fmt.Sprintf("%q is not an environment variable name", c.Admin.TokenEnv))
	}
	v.url("monolith.url", c.Monolith.URL)
	v.positive("monolith.timeout", c.Monolith.Timeout)

	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s, p := c.Services[name], "services."+name
		if !serviceName.MatchString(name) {
			v.add(p, "a service name is letters, digits, '_', '.' and '-'")
		}
		v.url(p+".url", s.URL)
		v.positive(p+".timeout", s.Timeout)
		if s.Health.Path != "" {
			if !strings.HasPrefix(s.Health.Path, "/") {
				v.add(p+".health.path", "must start with /")
			}
			v.positive(p+".health.interval", s.Health.Interval)
		} else if c.set(p + ".health.interval") {
			v.add(p+".health.path", "is needed when health.interval is set (for example /health)")
		}
		if s.Breaker.ConsecutiveFailures < 1 {
			v.add(p+".breaker.consecutive_failures", "must be at least 1")
		}
		v.positive(p+".breaker.open_for", s.Breaker.OpenFor)
	}

	for i, id := range c.Identity {
		p := fmt.Sprintf("identity[%d]", i)
		n := 0
		for _, set := range []bool{id.Header != "", id.Cookie != "", id.JWT != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.add(p, "set exactly one of header, cookie or jwt")
		}
		if !c.Server.UnderscoresInHeaders {
			// The proxy drops such headers before an upstream sees them.
			if strings.Contains(id.Header, "_") {
				v.add(p+".header", fmt.Sprintf("%q has '_', and request headers with '_' are dropped: use '-' or set server.underscores_in_headers: true", id.Header))
			}
			if id.JWT != nil && strings.Contains(id.JWT.Header, "_") {
				v.add(p+".jwt.header", fmt.Sprintf("%q has '_', and request headers with '_' are dropped: use '-' or set server.underscores_in_headers: true", id.JWT.Header))
			}
		}
		if j := id.JWT; j != nil {
			switch {
			case (j.HS256SecretEnv == "") == (j.RS256PublicKeyFile == ""):
				v.add(p+".jwt", "set exactly one of hs256_secret_env (the environment variable holding the HS256 secret) or rs256_public_key_file")
			case j.HS256SecretEnv != "" && !envName.MatchString(j.HS256SecretEnv):
				v.add(p+".jwt.hs256_secret_env", fmt.Sprintf("%q is not an environment variable name", j.HS256SecretEnv))
			}
		}
	}
	if c.Anonymous != AnonymousMonolith && c.Anonymous != AnonymousStickyCookie {
		v.add("anonymous", fmt.Sprintf("%q is not a policy: use %s or %s", c.Anonymous, AnonymousMonolith, AnonymousStickyCookie))
	}

	c.FlagsStore.validate(v)
	seen := make(map[string]int, len(c.Routes))
	for i := range c.Routes {
		v.route(i, &c.Routes[i], seen)
	}
	if len(v.probs) == 0 {
		return nil
	}
	sort.SliceStable(v.probs, func(i, j int) bool { return lineKey(v.probs[i]) < lineKey(v.probs[j]) })
	return &ValidationError{Problems: v.probs}
}

func lineKey(p Problem) int {
	if p.Line == 0 {
		return int(^uint(0) >> 1)
	}
	return p.Line
}

func (v *validator) route(i int, r *RouteConfig, seen map[string]int) {
	c := v.c
	p := fmt.Sprintf("routes[%d]", i)
	switch {
	case r.Prefix == "":
		v.add(p+".prefix", "is required (for example /api/users)")
	case !strings.HasPrefix(r.Prefix, "/"):
		v.add(p+".prefix", fmt.Sprintf("%q must start with /", r.Prefix))
	case strings.ContainsAny(r.Prefix, "?#"):
		v.add(p+".prefix", fmt.Sprintf("%q must be a path without query or fragment", r.Prefix))
	default:
		norm := NormalizePrefix(r.Prefix)
		if j, dup := seen[norm]; dup {
			v.add(p+".prefix", fmt.Sprintf("%q is also the prefix of routes[%d] (line %d): give each prefix one route", r.Prefix, j, c.Line(fmt.Sprintf("routes[%d].prefix", j))))
		} else {
			seen[norm] = i
		}
	}
	if r.Service == "" {
		v.add(p+".service", "is required: name one of services")
	} else if _, ok := c.Services[r.Service]; !ok {
		v.add(p+".service", fmt.Sprintf("%q is not defined under services", r.Service))
	}
	if r.Flag != "" && !flagKey.MatchString(r.Flag) {
		v.add(p+".flag", fmt.Sprintf("%q is not a flag key: letters, digits, '_', '.', ':' and '-'", r.Flag))
	}
	for k, m := range r.Methods {
		if !methodToken.MatchString(m) {
			v.add(fmt.Sprintf("%s.methods[%d]", p, k), fmt.Sprintf("%q is not an HTTP method", m))
		}
	}
	dup := map[string]bool{}
	for k, reason := range r.Fallback {
		switch reason {
		case ReasonConnectError, ReasonTimeout, ReasonStatus5xx, ReasonBreakerOpen:
		default:
			v.add(fmt.Sprintf("%s.fallback[%d]", p, k), fmt.Sprintf("%q is not a reason: use %s", reason, strings.Join(AllReasons(), ", ")))
		}
		if dup[reason] {
			v.add(fmt.Sprintf("%s.fallback[%d]", p, k), fmt.Sprintf("%q is listed twice", reason))
		}
		dup[reason] = true
	}
	if s := r.Shadow; s != nil {
		for _, pr := range s.Validate(p + ".shadow") {
			v.add(pr.Path, pr.Message)
		}
	}
}

// NormalizePrefix removes a trailing slash (but keeps "/"), so that
// "/api/users/" and "/api/users" are one prefix.
func NormalizePrefix(prefix string) string {
	for len(prefix) > 1 && strings.HasSuffix(prefix, "/") {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix
}

type validator struct {
	c     *Config
	probs []Problem
}

// add records a problem at path, on the line of path or, for a key the file
// does not set, of its closest parent.
func (v *validator) add(path, msg string) {
	line := 0
	for p := path; p != "" && line == 0; p = parent(p) {
		line = v.c.Line(p)
	}
	v.probs = append(v.probs, Problem{Path: path, Line: line, Message: msg})
}

// parent returns the field path one level up: "a.b[2]" → "a.b" → "a" → "".
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.add(path, fmt.Sprintf("must be a positive duration, got %s", d))
	}
}

func (v *validator) nonNegative(path string, d Duration) {
	if d < 0 {
		v.add(path, fmt.Sprintf("must not be negative, got %s", d))
	}
}

func (v *validator) hostPort(path, addr string) {
	if addr == "" {
		v.add(path, "is required: host:port, such as 127.0.0.1:8080")
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		v.add(path, fmt.Sprintf("%q is not host:port (such as 127.0.0.1:8080)", addr))
	}
}

func (v *validator) url(path, raw string) {
	if raw == "" {
		v.add(path, "is required: an http or https URL, such as http://127.0.0.1:8000")
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.add(path, fmt.Sprintf("%q is not a URL: %v", raw, err))
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(path, fmt.Sprintf("%q must start with http:// or https://", raw))
	case u.Host == "":
		v.add(path, fmt.Sprintf("%q has no host", raw))
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		v.add(path, fmt.Sprintf("%q must not carry a query, fragment or user", raw))
	}
}
