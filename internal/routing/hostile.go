package routing

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
)

// This file holds the checks that keep a client from making the proxy route
// a request on one reading of it while an upstream acts on another, and from
// passing its own faults off as the upstream's (issue 16).

// policy is the part of a configuration the checks below read, compiled
// once per Apply.
type policy struct {
	// identity lists the canonical names of the request headers a rollout
	// decision reads a user id from (identity header and jwt sources, and
	// Cookie for cookie sources).
	identity []string
	// unescapeSlashes forwards the decoded path of a request with an
	// escaped slash instead of refusing it (server.escaped_slashes).
	unescapeSlashes bool
	// keepUnderscores forwards request headers with '_' in their name
	// (server.underscores_in_headers).
	keepUnderscores bool
	// maxBody is the body limit of requests that match no route; 0 for
	// none.
	maxBody int64
}

func newPolicy(cfg *proxyconfig.Config) policy {
	p := policy{
		unescapeSlashes: cfg.Server.EscapedSlashes == proxyconfig.EscapedSlashesUnescape,
		keepUnderscores: cfg.Server.UnderscoresInHeaders,
		maxBody:         int64(cfg.MaxBody),
	}
	add := func(name string) {
		name = http.CanonicalHeaderKey(name)
		for _, n := range p.identity {
			if n == name {
				return
			}
		}
		p.identity = append(p.identity, name)
	}
	for _, id := range cfg.Identity {
		switch {
		case id.Header != "":
			add(id.Header)
		case id.Cookie != "":
			add("Cookie")
		case id.JWT != nil:
			add(id.JWT.Header)
		}
	}
	if cfg.Anonymous == proxyconfig.AnonymousStickyCookie {
		add("Cookie")
	}
	return p
}

// refusal is why a request is answered by the proxy itself, before any
// upstream sees it.
type refusal struct {
	status int
	why    string // for the proxy's log
}

// check looks at a request before it is routed. A refusal is the client's
// fault: no upstream gets the request, and it counts against none.
func (p *policy) check(r *http.Request) *refusal {
	// Two values of a header a user id is read from: the rollout decides
	// on the first, and an upstream may read the last and act for another
	// user (issue 16). Cookie headers are joined by the server, so a
	// repeated Cookie line is not two identities.
	for _, name := range p.identity {
		if name != "Cookie" && len(r.Header[name]) > 1 {
			return &refusal{http.StatusBadRequest, "two " + name + " headers"}
		}
	}
	if r.URL.RawPath != "" && !p.unescapeSlashes && hasEscapedSlash(r.URL.RawPath) {
		return &refusal{http.StatusBadRequest, "escaped slash in the path (server.escaped_slashes: reject)"}
	}
	// Decoded: "%5C" is how a URL writes a backslash, so it sets no
	// RawPath.
	if strings.IndexByte(r.URL.Path, '\\') >= 0 {
		return &refusal{http.StatusBadRequest, "backslash in the path"}
	}
	return nil
}

// hasEscapedSlash reports whether an escaped path holds %2F, in any case.
// Such a path is matched against routes decoded ("/api%2fusers" is
// "/api/users") while an upstream gets it as written and may read it as one
// segment, or decode it differently (Envoy's
// path_with_escaped_slashes_action). A backslash (%5C), which some
// upstreams read as a slash, is refused whatever the policy: it has no
// decoded URL form to forward.
func hasEscapedSlash(raw string) bool {
	for {
		i := strings.IndexByte(raw, '%')
		if i < 0 || i+2 >= len(raw) {
			return false
		}
		if raw[i+1] == '2' && raw[i+2]|0x20 == 'f' {
			return true
		}
		raw = raw[i+1:]
	}
}

// checkParams refuses a path whose ';' parameters would change its route
// when an upstream removes them, as Java servlet containers do: a dot
// segment with parameters ("/api/users/..;/admin" is "/admin" to Tomcat,
// "/api/users/..;/admin" here), or a segment whose parameters hide a route's
// prefix. path is the decoded path; match is the table's route for it.
func checkParams(t *Table, path string, match *Route) *refusal {
	if strings.IndexByte(path, ';') < 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(len(path))
	for seg := range strings.SplitSeq(path, "/") {
		name, _, params := strings.Cut(seg, ";")
		if params && (name == "." || name == "..") {
			return &refusal{http.StatusBadRequest, "dot segment with ';' parameters in the path"}
		}
		if b.Len() > 0 || seg != "" {
			b.WriteByte('/')
		}
		b.WriteString(name)
	}
	stripped := b.String()
	if stripped == "" || stripped[0] != '/' {
		stripped = "/" + stripped
	}
	if t.Match(MatchPath(stripped)) != match {
		return &refusal{http.StatusBadRequest, "';' parameters in the path change its route"}
	}
	return nil
}

// restoreIdentity puts back on the outbound header h the identity headers
// that the client's Connection header named, which ReverseProxy removed as
// hop-by-hop: the upstream must get the identity the decision was made on,
// not none (issue 16). The Connection header itself never passes.
func (p *policy) restoreIdentity(in, h http.Header) {
	for _, name := range p.identity {
		if _, ok := h[name]; ok {
			continue
		}
		if v, ok := in[name]; ok {
			h[name] = v
		}
	}
}

// dropUnderscores removes request headers with '_' in their name: CGI,
// WSGI and PHP read X_User_ID as X-User-ID, so such a header could stand in
// for one the rollout decision read (nginx's underscores_in_headers off).
func dropUnderscores(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			delete(h, k)
		}
	}
}

// errBodyTooLarge ends a request body that passed its route's max_body.
var errBodyTooLarge = errors.New("request body larger than max_body")

// requestBody is a client's request body on its way upstream. It counts
// what was read against the route's max_body, and remembers a read that
// failed: a body that is malformed (a bad chunk size), cut short (the
// client hung up) or too large is the client's fault, never a failure of
// the upstream it was being sent to (issue 16, finding 2). It is read by
// the transport's writer, which may be another goroutine; fault is read
// after the transport returned. It lives in the exchange, so it costs no
// allocation of its own.
type requestBody struct {
	r      io.ReadCloser
	limit  int64 // 0: none
	n      int64
	status atomic.Int32 // 400, 408 or 413 once a read failed
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.n += int64(n)
		if b.limit > 0 && b.n > b.limit {
			b.status.CompareAndSwap(0, http.StatusRequestEntityTooLarge)
			return 0, errBodyTooLarge
		}
	}
	if err != nil && err != io.EOF {
		b.status.CompareAndSwap(0, int32(bodyErrorStatus(err)))
	}
	return n, err
}

// bodyErrorStatus is the answer to a request whose body failed to read
// with err: 408 when the server's read timed out (the client is too slow),
// 400 otherwise (malformed, or the connection ended first).
func bodyErrorStatus(err error) int {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

// Close does nothing: the server owns the body and closes it, and after a
// connection error the monolith may still read it.
func (b *requestBody) Close() error { return nil }

// fault returns the status a failed read calls for, 0 if none failed.
func (b *requestBody) fault() int { return int(b.status.Load()) }
