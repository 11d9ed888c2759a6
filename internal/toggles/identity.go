package toggles

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IdentitySource is one entry of the proxy config's identity list: where a
// request's user id may come from. Exactly one field is set.
type IdentitySource struct {
	// Header takes the id from this request header.
	Header string `yaml:"header,omitempty"`
	// Cookie takes the id from this cookie.
	Cookie string `yaml:"cookie,omitempty"`
	// JWT takes the id from a claim of a verified JSON Web Token.
	JWT *JWTSource `yaml:"jwt,omitempty"`
}

// JWTSource verifies a JSON Web Token and takes the user id from one of its
// claims. Exactly one of HS256SecretEnv and RS256PublicKeyFile is set; the
// token's alg must be the one they imply.
type JWTSource struct {
	// Header carries the token, with or without a "Bearer " prefix.
	// Default Authorization.
	Header string `yaml:"header,omitempty"`
	// Claim holds the user id. Default sub.
	Claim string `yaml:"claim,omitempty"`
	// HS256SecretEnv names the environment variable holding the HMAC
	// secret.
	HS256SecretEnv string `yaml:"hs256_secret_env,omitempty"`
	// RS256PublicKeyFile is a PEM file with the RSA public key, relative
	// to the config file's folder.
	RS256PublicKeyFile string `yaml:"rs256_public_key_file,omitempty"`
}

// AnonymousMode says what happens to a request without a user id.
type AnonymousMode string

// The anonymous modes.
const (
	// AnonymousMonolith sends requests without a user id to the monolith.
	AnonymousMonolith AnonymousMode = "monolith"
	// AnonymousStickyCookie gives the visitor a random id in a cookie and
	// buckets them by it, so they stay in one cohort.
	AnonymousStickyCookie AnonymousMode = "sticky_cookie"
)

// DefaultStickyCookie is the cookie name of AnonymousStickyCookie.
const DefaultStickyCookie = "strangler_uid"

// The identity sources' names, as in Identity.Source.
const (
	SourceHeader       = "header"
	SourceCookie       = "cookie"
	SourceJWT          = "jwt"
	SourceStickyCookie = "sticky_cookie"
)

// JWT failure reasons passed to ResolverConfig.OnJWTFailure: a bounded set,
// safe as a metric label.
const (
	JWTMalformed    = "malformed"
	JWTBadSignature = "bad_signature"
	JWTWrongAlg     = "wrong_alg"
	JWTExpired      = "expired"
	JWTNotYetValid  = "not_yet_valid"
	JWTMissingClaim = "missing_claim"
	JWTInvalid      = "invalid"
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Sources are tried in order; the first that yields an id wins.
	Sources []IdentitySource
	// Anonymous is the mode for requests no source identifies. Empty
	// means AnonymousMonolith.
	Anonymous AnonymousMode
	// CookieName is the sticky cookie's name. Empty means
	// DefaultStickyCookie.
	CookieName string
	// Getenv reads secrets. Nil means os.Getenv.
	Getenv func(string) string
	// BaseDir resolves relative key files (the config file's folder).
	BaseDir string
	// OnJWTFailure is called with a bounded reason each time a token is
	// present but not believed. May be nil.
	OnJWTFailure func(reason string)
	// Now is the clock for exp and nbf. Nil means time.Now.
	Now func() time.Time
}

// Identity is who a request is from.
type Identity struct {
	// UserID is the id to bucket by; empty for an anonymous request.
	UserID string
	// Source is the kind of source that yielded the id (SourceHeader...).
	Source string
	// Claims are the verified JWT's claims when the id came from a JWT.
	Claims map[string]any

	cookie *http.Cookie
}

// SetCookie sets the sticky cookie on the response when this identity was
// just minted for an anonymous visitor; otherwise it does nothing. Call it
// before the response's headers are written.
func (id Identity) SetCookie(w http.ResponseWriter) {
	if id.cookie != nil {
		http.SetCookie(w, id.cookie)
	}
}

// Cookie returns the sticky cookie to set on the response, or nil.
func (id Identity) Cookie() *http.Cookie { return id.cookie }

// Resolver finds a request's user id. It is safe for concurrent use.
type Resolver struct {
	sources   []compiledSource
	anonymous AnonymousMode
	cookie    string
	onFail    func(string)
	now       func() time.Time
}

type compiledSource struct {
	kind   string
	name   string // header or cookie name
	claim  string
	alg    string
	key    any
	parser *jwt.Parser
}

// ValidateIdentity checks the identity list and anonymous mode without
// reading secrets or key files, returning every problem with its field path
// (identity[0].jwt.claim, anonymous).
func ValidateIdentity(sources []IdentitySource, anonymous AnonymousMode) []Problem {
	var ps problems
	for i, s := range sources {
		path := fmt.Sprintf("identity[%d]", i)
		if s.JWT != nil {
			validateJWTSource(&ps, path+".jwt", *s.JWT)
		}
		switch n := countSet(s.Header != "", s.Cookie != "", s.JWT != nil); {
		case n == 0:
			ps.add(path, "set one of header, cookie or jwt")
		case n > 1:
			ps.add(path, "set only one of header, cookie or jwt (use one list entry each)")
		}
	}
	switch anonymous {
	case "", AnonymousMonolith, AnonymousStickyCookie:
	default:
		ps.add("anonymous", "%q is not one of monolith, sticky_cookie", anonymous)
	}
	return ps
}

func validateJWTSource(ps *problems, path string, j JWTSource) {
	switch {
	case j.HS256SecretEnv == "" && j.RS256PublicKeyFile == "":
		ps.add(path, "set hs256_secret_env (an environment variable with the secret) or rs256_public_key_file (a PEM public key)")
	case j.HS256SecretEnv != "" && j.RS256PublicKeyFile != "":
		ps.add(path, "set only one of hs256_secret_env or rs256_public_key_file")
	}
}

// NewResolver checks the config, reads the secrets and keys it names and
// returns a Resolver. A missing or empty secret, or an unreadable key, is a
// *ValidationError naming the field.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	ps := problems(ValidateIdentity(cfg.Sources, cfg.Anonymous))
	if len(ps) > 0 {
		return nil, fmt.Errorf("identity config: %w", ps.err())
	}
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	r := &Resolver{anonymous: cfg.Anonymous, cookie: cfg.CookieName, onFail: cfg.OnJWTFailure, now: cfg.Now}
	if r.anonymous == "" {
		r.anonymous = AnonymousMonolith
	}
	if r.cookie == "" {
		r.cookie = DefaultStickyCookie
	}
	if r.now == nil {
		r.now = time.Now
	}
	for i, s := range cfg.Sources {
		path := fmt.Sprintf("identity[%d].jwt", i)
		switch {
		case s.Header != "":
			r.sources = append(r.sources, compiledSource{kind: SourceHeader, name: http.CanonicalHeaderKey(s.Header)})
		case s.Cookie != "":
			r.sources = append(r.sources, compiledSource{kind: SourceCookie, name: s.Cookie})
		default:
			cs := compiledSource{kind: SourceJWT, name: s.JWT.Header, claim: s.JWT.Claim}
			if cs.name == "" {
				cs.name = "Authorization"
			}
			cs.name = http.CanonicalHeaderKey(cs.name)
			if cs.claim == "" {
				cs.claim = "sub"
			}
			if env := s.JWT.HS256SecretEnv; env != "" {
				secret := getenv(env)
				if secret == "" {
					ps.add(path+".hs256_secret_env", "environment variable %s is empty or not set: export the HMAC secret in it", env)
					continue
				}
				cs.alg, cs.key = jwt.SigningMethodHS256.Alg(), []byte(secret)
			} else {
				key, err := readRSAPublicKey(s.JWT.RS256PublicKeyFile, cfg.BaseDir)
				if err != nil {
					ps.add(path+".rs256_public_key_file", "%v", err)
					continue
				}
				cs.alg, cs.key = jwt.SigningMethodRS256.Alg(), key
			}
			cs.parser = jwt.NewParser(jwt.WithTimeFunc(r.now))
			r.sources = append(r.sources, cs)
		}
	}
	if err := ps.err(); err != nil {
		return nil, fmt.Errorf("identity config: %w", err)
	}
	return r, nil
}

func readRSAPublicKey(file, baseDir string) (*rsa.PublicKey, error) {
	if !filepath.IsAbs(file) && baseDir != "" {
		file = filepath.Join(baseDir, file)
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read RS256 public key: %w", err)
	}
	if len(strings.TrimSpace(string(pem))) == 0 {
		return nil, fmt.Errorf("RS256 public key file %s is empty: put the PEM public key in it", file)
	}
	key, err := jwt.ParseRSAPublicKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("RS256 public key file %s: %w", file, err)
	}
	return key, nil
}

// Resolve finds the request's user id: the first source that yields one
// wins. A header source repeated in the request yields nothing. A token that fails verification yields nothing (it is reported
// through OnJWTFailure) and the next source is tried. Without an id, in
// sticky_cookie mode, the visitor's cookie is used, or a new random id is
// minted: call Identity.SetCookie on the response.
func (r *Resolver) Resolve(req *http.Request) Identity {
	for i := range r.sources {
		s := &r.sources[i]
		switch s.kind {
		case SourceHeader:
			if v := strings.TrimSpace(headerValue(req.Header, s.name)); v != "" {
				return Identity{UserID: v, Source: SourceHeader}
			}
		case SourceCookie:
			if c, err := req.Cookie(s.name); err == nil && c.Value != "" {
				return Identity{UserID: c.Value, Source: SourceCookie}
			}
		case SourceJWT:
			if id, ok := r.fromJWT(s, headerValue(req.Header, s.name)); ok {
				return id
			}
		}
	}
	if r.anonymous != AnonymousStickyCookie {
		return Identity{}
	}
	if c, err := req.Cookie(r.cookie); err == nil && validStickyID(c.Value) {
		return Identity{UserID: c.Value, Source: SourceStickyCookie}
	}
	id := newStickyID()
	return Identity{UserID: id, Source: SourceStickyCookie, cookie: &http.Cookie{
		Name:     r.cookie,
		Value:    id,
		Path:     "/",
		MaxAge:   365 * 24 * 60 * 60,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   req.TLS != nil,
	}}
}

// headerValue is the value of a header that appears once, for a name
// already in canonical form; "" when it is absent or repeated. A repeated
// identity header is no identity: which of its values an application reads
// is its own choice, and the rollout must not decide on another one than it
// does (issue 16; strangler-proxy refuses such requests with 400 before
// they get here).
func headerValue(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// errWrongAlg marks a token signed with another algorithm than configured.
var errWrongAlg = errors.New("token alg is not the configured one")

func (r *Resolver) fromJWT(s *compiledSource, raw string) (Identity, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return Identity{}, false
	}
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	claims := jwt.MapClaims{}
	_, err := s.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		// RFC 8725 §2.1 (algorithm confusion): only the configured
		// algorithm is accepted, whatever the token's header says.
		if t.Method.Alg() != s.alg {
			return nil, errWrongAlg
		}
		return s.key, nil
	})
	if err != nil {
		r.fail(jwtFailureReason(err))
		return Identity{}, false
	}
	id, _ := claims[s.claim].(string)
	if id == "" {
		r.fail(JWTMissingClaim)
		return Identity{}, false
	}
	return Identity{UserID: id, Source: SourceJWT, Claims: claims}, true
}

func (r *Resolver) fail(reason string) {
	if r.onFail != nil {
		r.onFail(reason)
	}
}

func jwtFailureReason(err error) string {
	switch {
	case errors.Is(err, errWrongAlg):
		return JWTWrongAlg
	case errors.Is(err, jwt.ErrTokenMalformed):
		return JWTMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return JWTBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return JWTExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return JWTNotYetValid
	}
	return JWTInvalid
}

// newStickyID returns 128 random bits in hex.
func newStickyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

func validStickyID(v string) bool {
	if len(v) != 32 {
		return false
	}
	_, err := hex.DecodeString(v)
	return err == nil
}
