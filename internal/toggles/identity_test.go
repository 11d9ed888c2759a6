package toggles

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"gopkg.in/yaml.v3"
)

const testSecret = "s3cret-for-tests-only"

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// signHS signs claims with an HMAC method and key.
func signHS(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign token: %v", err)
	}
	return s
}

// newTestResolver builds a Resolver with a fixed clock; failures collects
// the reported JWT failure reasons.
func newTestResolver(tb testing.TB, sources []IdentitySource, anon AnonymousMode, failures *[]string) *Resolver {
	tb.Helper()
	r, err := NewResolver(ResolverConfig{
		Sources:      sources,
		Anonymous:    anon,
		Getenv:       func(k string) string { return map[string]string{"JWT_SECRET": testSecret}[k] },
		OnJWTFailure: func(reason string) { *failures = append(*failures, reason) },
		Now:          func() time.Time { return testNow },
	})
	if err != nil {
		tb.Fatalf("NewResolver: %v", err)
	}
	return r
}

func TestResolveSources(t *testing.T) {
	sources := []IdentitySource{
		{JWT: &JWTSource{Header: "Authorization", Claim: "sub", HS256SecretEnv: "JWT_SECRET"}},
		{Header: "X-User-ID"},
		{Cookie: "uid"},
	}
	valid := jwt.MapClaims{"sub": "u-jwt", "email": "a@example.com", "exp": testNow.Add(time.Hour).Unix()}
	tests := []struct {
		name        string
		auth        string
		header      string
		cookie      string
		wantID      string
		wantSource  string
		wantFailure string
	}{
		{"valid token with Bearer", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte(testSecret), valid), "", "", "u-jwt", SourceJWT, ""},
		{"valid token without prefix", signHS(t, jwt.SigningMethodHS256, []byte(testSecret), valid), "", "", "u-jwt", SourceJWT, ""},
		{"forged signature falls through to the header", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte("guessed"), valid), "u-hdr", "", "u-hdr", SourceHeader, JWTBadSignature},
		{"wrong alg", "Bearer " + signHS(t, jwt.SigningMethodHS384, []byte(testSecret), valid), "", "u-ck", "u-ck", SourceCookie, JWTWrongAlg},
		{"alg none", "Bearer " + signHS(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid), "", "", "", "", JWTWrongAlg},
		{"expired", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "u-jwt", "exp": testNow.Add(-time.Minute).Unix()}), "", "", "", "", JWTExpired},
		{"not yet valid", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "u-jwt", "nbf": testNow.Add(time.Hour).Unix()}), "", "", "", "", JWTNotYetValid},
		{"no sub claim", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"email": "x"}), "", "", "", "", JWTMissingClaim},
		{"garbage", "Bearer not.a.token", "", "", "", "", JWTMalformed},
		{"no token: header", "", "u-hdr", "u-ck", "u-hdr", SourceHeader, ""},
		{"nothing", "", "", "", "", "", ""},
		// Issue 16: an application may read either of two X-User-ID.
		{"two X-User-ID: none believed", "", "u-hdr,u-other", "u-ck", "u-ck", SourceCookie, ""},
		{"two tokens: none believed", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte(testSecret), valid) + ",Bearer x", "u-hdr", "", "u-hdr", SourceHeader, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var failures []string
			r := newTestResolver(t, sources, AnonymousMonolith, &failures)
			req := httptest.NewRequest(http.MethodGet, "/api/users", nil)
			// A comma separates the values of a header sent twice.
			for _, v := range strings.Split(tt.auth, ",") {
				if v != "" {
					req.Header.Add("Authorization", v)
				}
			}
			for _, v := range strings.Split(tt.header, ",") {
				if v != "" {
					req.Header.Add("X-User-ID", v)
				}
			}
			if tt.cookie != "" {
				req.AddCookie(&http.Cookie{Name: "uid", Value: tt.cookie})
			}
			id := r.Resolve(req)
			if id.UserID != tt.wantID || id.Source != tt.wantSource {
				t.Fatalf("got id %q from %q, want %q from %q", id.UserID, id.Source, tt.wantID, tt.wantSource)
			}
			wantFailures := 0
			if tt.wantFailure != "" {
				wantFailures = 1
			}
			if len(failures) != wantFailures || (wantFailures == 1 && failures[0] != tt.wantFailure) {
				t.Fatalf("failures: got %v, want [%s]", failures, tt.wantFailure)
			}
			if id.Source == SourceJWT && id.Claims["email"] != "a@example.com" {
				t.Fatalf("claims: got %v, want the token's email", id.Claims)
			}
			if id.Cookie() != nil {
				t.Fatalf("cookie in monolith mode: got %v, want none", id.Cookie())
			}
		})
	}
}

func TestResolveRS256(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	var failures []string
	r, err := NewResolver(ResolverConfig{
		Sources:      []IdentitySource{{JWT: &JWTSource{RS256PublicKeyFile: "jwt.pub"}}},
		BaseDir:      dir,
		OnJWTFailure: func(reason string) { failures = append(failures, reason) },
	})
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	good := signHS(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "u-rsa"})
	// An HS256 token whose secret is the public key's PEM: the classic
	// algorithm-confusion forgery.
	pub, _ := os.ReadFile(filepath.Join(dir, "jwt.pub"))
	forged := signHS(t, jwt.SigningMethodHS256, pub, jwt.MapClaims{"sub": "u-rsa"})
	tests := []struct {
		name, token, want string
	}{
		{"signed by the key", good, "u-rsa"},
		{"HS256 with the public key as secret", forged, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+tt.token)
			if got := r.Resolve(req).UserID; got != tt.want {
				t.Fatalf("user id: got %q, want %q", got, tt.want)
			}
		})
	}
	if len(failures) != 1 || failures[0] != JWTWrongAlg {
		t.Fatalf("failures: got %v, want [wrong_alg]", failures)
	}
}

func TestResolverConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		sources []IdentitySource
		anon    AnonymousMode
		want    string
	}{
		{"missing secret", []IdentitySource{{JWT: &JWTSource{HS256SecretEnv: "NOT_SET"}}}, "",
			"identity[0].jwt.hs256_secret_env: environment variable NOT_SET is empty or not set"},
		{"missing key file", []IdentitySource{{JWT: &JWTSource{RS256PublicKeyFile: "/nonexistent/key.pem"}}}, "",
			"identity[0].jwt.rs256_public_key_file: read RS256 public key"},
		{"no key at all", []IdentitySource{{JWT: &JWTSource{}}}, "",
			"identity[0].jwt: set hs256_secret_env"},
		{"two kinds in one entry", []IdentitySource{{Header: "X-User-ID", Cookie: "uid"}}, "",
			"identity[0]: set only one of header, cookie or jwt"},
		{"empty entry", []IdentitySource{{}}, "", "identity[0]: set one of header, cookie or jwt"},
		{"bad anonymous mode", nil, "random", `anonymous: "random" is not one of monolith, sticky_cookie`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewResolver(ResolverConfig{Sources: tt.sources, Anonymous: tt.anon, Getenv: func(string) string { return "" }})
			var verr *ValidationError
			if !errors.As(err, &verr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewResolver: got %v, want a *ValidationError containing %q", err, tt.want)
			}
		})
	}
}

func TestStickyCookie(t *testing.T) {
	var failures []string
	r := newTestResolver(t, []IdentitySource{{Header: "X-User-ID"}}, AnonymousStickyCookie, &failures)

	first := r.Resolve(httptest.NewRequest(http.MethodGet, "/", nil))
	c := first.Cookie()
	if first.UserID == "" || c == nil || c.Value != first.UserID {
		t.Fatalf("first visit: got id %q cookie %v, want a new id in a cookie", first.UserID, c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.Path != "/" {
		t.Fatalf("cookie over plain HTTP: got %+v, want HttpOnly, SameSite=Lax, not Secure, Path=/", c)
	}
	rec := httptest.NewRecorder()
	first.SetCookie(rec)
	if got := rec.Header().Get("Set-Cookie"); !strings.HasPrefix(got, DefaultStickyCookie+"="+first.UserID) {
		t.Fatalf("Set-Cookie: got %q, want the sticky cookie", got)
	}

	again := httptest.NewRequest(http.MethodGet, "/", nil)
	again.AddCookie(c)
	second := r.Resolve(again)
	if second.UserID != first.UserID || second.Cookie() != nil {
		t.Fatalf("second visit: got id %q cookie %v, want %q and no new cookie", second.UserID, second.Cookie(), first.UserID)
	}

	tlsReq := httptest.NewRequest(http.MethodGet, "/", nil)
	tlsReq.TLS = &tls.ConnectionState{}
	if c := r.Resolve(tlsReq).Cookie(); c == nil || !c.Secure {
		t.Fatalf("cookie over TLS: got %+v, want Secure", c)
	}

	forged := httptest.NewRequest(http.MethodGet, "/", nil)
	forged.AddCookie(&http.Cookie{Name: DefaultStickyCookie, Value: "admin"})
	if got := r.Resolve(forged); got.UserID == "admin" || got.Cookie() == nil {
		t.Fatalf("malformed sticky cookie: got id %q, want a fresh id", got.UserID)
	}
}

func FuzzResolveJWT(f *testing.F) {
	f.Add("Bearer " + signHS(f, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "u-1"}))
	f.Add("Bearer " + signHS(f, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "u-1"}))
	f.Add("Bearer a.b.c")
	f.Add("bearer ")
	var failures []string
	r := newTestResolver(f, []IdentitySource{{JWT: &JWTSource{HS256SecretEnv: "JWT_SECRET"}}}, AnonymousMonolith, &failures)
	f.Fuzz(func(t *testing.T, auth string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", auth)
		id := r.Resolve(req)
		if id.UserID == "" {
			return
		}
		// Whatever is believed must carry a valid HS256 signature by the
		// secret: re-verify it independently of the Resolver.
		raw := strings.TrimSpace(auth)
		if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
			raw = strings.TrimSpace(raw[7:])
		}
		if _, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return testNow })); err != nil {
			t.Fatalf("believed %q for a token that does not verify: %v", id.UserID, err)
		}
	})
}

func TestIdentityConfigDecodesFromTheProxyConfig(t *testing.T) {
	// The identity part of DESIGN.md's proxy config, decoded strictly into
	// the types a proxy config embeds.
	const design = `identity:
  - header: X-User-ID
  - cookie: uid
  - jwt: {header: Authorization, claim: sub, hs256_secret_env: JWT_SECRET}
  - jwt: {claim: sub, rs256_public_key_file: keys/jwt.pub}
anonymous: sticky_cookie
`
	var cfg struct {
		Identity  []IdentitySource `yaml:"identity"`
		Anonymous AnonymousMode    `yaml:"anonymous"`
	}
	dec := yaml.NewDecoder(strings.NewReader(design))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got := len(cfg.Identity); got != 4 {
		t.Fatalf("sources: got %d, want 4", got)
	}
	if j := cfg.Identity[2].JWT; j == nil || j.HS256SecretEnv != "JWT_SECRET" || j.Claim != "sub" || j.Header != "Authorization" {
		t.Fatalf("identity[2].jwt: got %+v, want the HS256 source", cfg.Identity[2].JWT)
	}
	if got := cfg.Identity[3].JWT.RS256PublicKeyFile; got != "keys/jwt.pub" {
		t.Fatalf("identity[3].jwt.rs256_public_key_file: got %q, want keys/jwt.pub", got)
	}
	if cfg.Anonymous != AnonymousStickyCookie {
		t.Fatalf("anonymous: got %q, want sticky_cookie", cfg.Anonymous)
	}
	if ps := ValidateIdentity(cfg.Identity, cfg.Anonymous); len(ps) != 0 {
		t.Fatalf("ValidateIdentity: got %v, want no problems", ps)
	}
	bad := yaml.NewDecoder(strings.NewReader("identity:\n  - jwt: {secret_env: X}\n"))
	bad.KnownFields(true)
	if err := bad.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "line 2: field secret_env not found") {
		t.Fatalf("unknown jwt key: got %v, want an error naming line 2 and the field", err)
	}
}
