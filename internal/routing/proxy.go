package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/shadow"
)

// Options are a Proxy's collaborators. Logger and Registry are required.
type Options struct {
	// Logger receives the proxy's own events (breaker changes, health flips).
	Logger *slog.Logger
	// AccessLog receives one line per request when the config's access_log
	// is on; nil turns the access log off whatever the config says.
	AccessLog *slog.Logger
	// Registry receives the proxy's metrics.
	Registry prometheus.Registerer
	// Rollout decides between service and monolith for routes with a
	// service; nil means DefaultRollout.
	Rollout Rollout
	// Observer, when set, sees the outcome of every request that matched a
	// route (for rollout guards); nil means none.
	Observer Observer
}

// Result is the outcome of a request that matched a route.
type Result struct {
	// Decision is where the rollout sent the request.
	Decision Decision
	// Backend is who answered: the monolith after a fallback.
	Backend Backend
	// Status is the status code the client got (499: the client went away).
	Status int
	// Fallback is why the monolith answered instead of the service, if so.
	Fallback Reason
	// Failure is how the service failed, also when the request did not fall
	// back (a POST's 5xx, say).
	Failure Reason
	// Duration is from receiving the request to the end of the answer.
	Duration time.Duration
}

// Observer receives request outcomes. Observe runs on the request's
// goroutine after the answer was sent: it must be quick and safe for
// concurrent use.
type Observer interface {
	Observe(r *http.Request, route *Route, res Result)
}

// Proxy is the strangler-proxy request handler. Create it with New, give it a
// configuration with Apply, and Close it when done.
type Proxy struct {
	opts    Options
	rollout Rollout
	metrics *metrics
	shadow  *shadow.Shadower
	rp      *httputil.ReverseProxy
	state   atomic.Pointer[state]

	mu     sync.Mutex // serializes Apply and Close
	ctx    context.Context
	cancel context.CancelFunc
}

// state is one configuration, compiled. It is immutable once stored.
type state struct {
	cfg       *proxyconfig.Config
	table     *Table
	monolith  *upstream
	services  map[string]*upstream
	unrouted  *routeMetrics
	maxReplay int64
	accessLog bool
	policy    policy
}

// New returns a Proxy with the configuration cfg applied.
func New(cfg *proxyconfig.Config, opts Options) (*Proxy, error) {
	if opts.Logger == nil || opts.Registry == nil {
		return nil, errors.New("new proxy: Logger and Registry are required")
	}
	p := &Proxy{opts: opts, rollout: opts.Rollout}
	if p.rollout == nil {
		p.rollout = RolloutFunc(DefaultRollout)
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("new proxy: register metrics: %w", err)
	}
	if err := opts.Registry.Register(newUpstreamCollector(p)); err != nil {
		return nil, fmt.Errorf("new proxy: register metrics: %w", err)
	}
	p.metrics = m
	p.shadow, err = shadow.New(shadow.Options{Registerer: opts.Registry, Logger: opts.Logger.With("component", "shadow")})
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      (*fallbackTransport)(p),
		ModifyResponse: modifyResponse,
		ErrorHandler:   p.errorHandler,
		BufferPool:     newBufferPool(),
		ErrorLog:       slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		// FlushInterval 0: ReverseProxy flushes every write of answers of
		// unknown length (chunked) and of text/event-stream, so streams pass
		// as they come; answers of known length are not flushed early.
	}
	if err := p.Apply(cfg); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Apply compiles cfg and swaps it in atomically. Requests in flight finish on
// the configuration they started with. Services (and the monolith) whose
// settings are unchanged keep their breaker, health state and connections.
func (p *Proxy) Apply(cfg *proxyconfig.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return errors.New("apply config: proxy closed")
	}
	old := p.state.Load()
	st := &state{
		cfg:       cfg,
		services:  make(map[string]*upstream, len(cfg.Services)),
		unrouted:  p.metrics.route(UnroutedLabel),
		maxReplay: int64(cfg.MaxReplayBody),
		accessLog: cfg.AccessLog && p.opts.AccessLog != nil,
		policy:    newPolicy(cfg),
	}
	var fresh []*upstream
	monoSettings := fmt.Sprintf("%+v", cfg.Monolith)
	if old != nil && old.monolith.settings == monoSettings {
		st.monolith = old.monolith
	} else {
		m, err := newUpstream("monolith", cfg.Monolith.URL, cfg.Monolith.Timeout.D(), p.opts.Logger)
		if err != nil {
			return fmt.Errorf("apply config: %w", err)
		}
		m.settings = monoSettings
		st.monolith = m
		fresh = append(fresh, m)
	}
	for name, sc := range cfg.Services {
		if old != nil {
			if u, ok := old.services[name]; ok && u.settings == fmt.Sprintf("%+v", *sc) {
				st.services[name] = u
				continue
			}
		}
		u, err := newService(name, sc, p.opts.Logger)
		if err != nil {
			for _, f := range fresh {
				f.close()
			}
			return fmt.Errorf("apply config: %w", err)
		}
		st.services[name] = u
		fresh = append(fresh, u)
	}
	routes := make([]*Route, 0, len(cfg.Routes))
	var shadowed []shadow.Route
	for _, rc := range cfg.Routes {
		r := newRoute(rc)
		r.svc = st.services[rc.Service]
		if r.svc == nil {
			return fmt.Errorf("apply config: route %s: unknown service %q", r.Label, rc.Service)
		}
		r.metrics = p.metrics.route(r.Label)
		routes = append(routes, r)
		if r.shadowed {
			sr := shadow.Route{Name: r.Label, Config: *rc.Shadow, Service: r.svc.url, Monolith: st.monolith.url,
				Timeout: cfg.Services[rc.Service].Timeout.D()}
			if rc.StripPrefix {
				sr.StripPrefix = r.Prefix
			}
			shadowed = append(shadowed, sr)
		}
	}
	st.table = NewTable(routes)
	p.shadow.Configure(shadowed)
	for _, u := range fresh {
		u.startHealth(p.ctx)
	}
	p.state.Store(st)
	if old != nil {
		kept := make(map[*upstream]bool, len(st.services)+1)
		kept[st.monolith] = true
		for _, u := range st.services {
			kept[u] = true
		}
		if !kept[old.monolith] {
			old.monolith.close()
		}
		for _, u := range old.services {
			if !kept[u] {
				u.close()
			}
		}
	}
	return nil
}

// Close stops health checks and closes idle connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel()
	p.shadow.Close()
	if st := p.state.Load(); st != nil {
		st.monolith.close()
		for _, u := range st.services {
			u.close()
		}
	}
}

// Shadower is the proxy's shadow traffic, for the admin API's
// GET /admin/shadow/mismatches (its Handler).
func (p *Proxy) Shadower() *shadow.Shadower { return p.shadow }

// Config returns the configuration in force.
func (p *Proxy) Config() *proxyconfig.Config { return p.state.Load().cfg }

// Table returns the route table in force.
func (p *Proxy) Table() *Table { return p.state.Load().table }

// Ready reports whether the proxy can serve: a configuration is loaded and the
// monolith accepts connections.
func (p *Proxy) Ready(ctx context.Context) error {
	st := p.state.Load()
	if st == nil {
		return errors.New("ready: no configuration")
	}
	ctx, cancel := context.WithTimeout(ctx, min(st.monolith.timeout, 2*time.Second))
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", hostPort(st.monolith.url.Scheme, st.monolith.url.Host))
	if err != nil {
		return fmt.Errorf("ready: monolith: %w", err)
	}
	c.Close()
	return nil
}

func hostPort(scheme, host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "https" {
		return net.JoinHostPort(host, "443")
	}
	return net.JoinHostPort(host, "80")
}

// ServiceStatus is a service's live state, for the admin API.
type ServiceStatus struct {
	Name    string `json:"name"`
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
	Breaker string `json:"breaker"`
	// LastCheck is the time of the last health check, if the service has
	// health checks.
	LastCheck *time.Time `json:"last_check,omitempty"`
}

// RouteStatus is a route as in force, for the admin API.
type RouteStatus struct {
	Label   string   `json:"route"`
	Prefix  string   `json:"prefix"`
	Service string   `json:"service"`
	Flag    string   `json:"flag,omitempty"`
	Methods []string `json:"methods,omitempty"`
}

// Status is the proxy's live state, for the admin API.
type Status struct {
	Monolith string          `json:"monolith"`
	Services []ServiceStatus `json:"services"`
	Routes   []RouteStatus   `json:"routes"`
}

// Status reports the configuration in force with breaker and health states.
func (p *Proxy) Status() Status {
	st := p.state.Load()
	s := Status{Monolith: st.monolith.url.String()}
	for name, u := range st.services {
		ss := ServiceStatus{Name: name, URL: u.url.String(), Healthy: u.healthy.Load(), Breaker: u.breakerState().String()}
		if ns := u.checkedAt.Load(); ns != 0 {
			t := time.Unix(0, ns).UTC()
			ss.LastCheck = &t
		}
		s.Services = append(s.Services, ss)
	}
	sort.Slice(s.Services, func(i, j int) bool { return s.Services[i].Name < s.Services[j].Name })
	for _, r := range st.table.Routes() {
		s.Routes = append(s.Routes, RouteStatus{Label: r.Label, Prefix: r.Prefix, Service: r.Service, Flag: r.Flag, Methods: r.methods})
	}
	return s
}

// exchange is one request's trip through the proxy. It travels from
// ServeHTTP to the transport and back as the request's context: it wraps the
// client's context and answers Value(exchangeKey{}) with itself, which saves
// the allocation of a context.WithValue per request. Cancellation and every
// other value come from the client's context unchanged.
type exchange struct {
	context.Context

	st       *state
	in       *http.Request
	w        http.ResponseWriter
	route    *Route // nil when no route matched
	svc      *upstream
	decision Decision
	reqID    string
	capture  *shadow.Capture // set when the answer is to be shadowed
	body     requestBody     // the request body as the upstream reads it
	refused  bool            // answered by the proxy: the client's fault

	// Written by the transport, read after ReverseProxy.ServeHTTP returns.
	backend Backend
	reason  Reason // the fallback taken, if any
	failure Reason // the service failure, even without fallback
	status  int

	// Backing arrays, so that the request id and the forwarding headers
	// added to every outbound request cost no allocation of their own.
	id  [32]byte
	hdr [4]string
}

type exchangeKey struct{}

// Value implements context.Context.
func (ex *exchange) Value(key any) any {
	if _, ok := key.(exchangeKey); ok {
		return ex
	}
	return ex.Context.Value(key)
}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP routes, proxies, records metrics and writes the access log line.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := p.state.Load()
	ex := &exchange{Context: r.Context(), st: st, in: r, w: w, reqID: r.Header.Get("X-Request-Id")}
	if ex.reqID == "" {
		ex.reqID = ex.newRequestID()
	}
	ex.route = st.table.Match(MatchPath(r.URL.Path))
	ex.body.limit = st.policy.maxBody
	if ex.route != nil {
		ex.body.limit = ex.route.maxBody
	}
	if rf := p.screen(r, ex); rf != nil {
		p.refuse(w, r, ex, start, rf)
		return
	}
	switch {
	case ex.route == nil:
		ex.decision = Decision{Backend: BackendMonolith, Reason: DecisionNoRoute}
	case !ex.route.AllowsMethod(r.Method):
		ex.decision = Decision{Backend: BackendMonolith, Reason: DecisionMethod}
	default:
		ex.decision = p.rollout.Decide(r, ex.route)
		if ex.decision.Backend == BackendService {
			ex.svc = ex.route.svc
		} else if ex.route.shadowed {
			// Only what the rollout sent to the monolith: a fallback is
			// the service failing, not a request to compare.
			ex.capture = p.shadow.Begin(ex.route.Label, r)
		}
		if c := ex.decision.SetCookie; c != nil {
			// Set before proxying: ReverseProxy adds the upstream's headers
			// to these, it does not replace them.
			http.SetCookie(w, c)
		}
	}
	// Deferred: ReverseProxy aborts the handler with a panic
	// (http.ErrAbortHandler) when an answer breaks off mid-body, and that
	// request must be counted and logged too.
	defer p.record(r, ex, start)
	p.rp.ServeHTTP(w, r.WithContext(ex))
}

// screen returns why the proxy must refuse r before routing it, or nil.
func (p *Proxy) screen(r *http.Request, ex *exchange) *refusal {
	if rf := ex.st.policy.check(r); rf != nil {
		return rf
	}
	if rf := checkParams(ex.st.table, r.URL.Path, ex.route); rf != nil {
		return rf
	}
	// Known too large before a byte of it is read: nothing is sent
	// upstream. A chunked body is counted as it streams (requestBody).
	if ex.body.limit > 0 && r.ContentLength > ex.body.limit {
		return &refusal{http.StatusRequestEntityTooLarge, "Content-Length above max_body"}
	}
	return nil
}

// refuse answers a request the proxy will not pass on. It is counted in
// the route's metrics and logged, but no upstream, breaker or guard sees
// it: the fault is the client's.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, ex *exchange, start time.Time, rf *refusal) {
	ex.refused, ex.status = true, rf.status
	if rf.status == http.StatusRequestEntityTooLarge {
		// The body stays unread: do not wait for it on this connection.
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(rf.status)
	p.opts.Logger.Debug("request refused", "request_id", ex.reqID, "status", rf.status, "why", rf.why)
	p.record(r, ex, start)
}

// MatchPath is the path routes are matched against: the request's path,
// cleaned when it has dot segments or doubled slashes, so that
// "/api/users/../orders" is not taken for a users request. The path sent
// upstream stays as the client wrote it.
func MatchPath(p string) string {
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") {
		return p
	}
	c := path.Clean(p)
	if c == "." {
		return "/"
	}
	return c
}

// record counts a finished request in the metrics and the access log.
func (p *Proxy) record(r *http.Request, ex *exchange, start time.Time) {
	st := ex.st
	elapsed := time.Since(start)
	rm := st.unrouted
	if ex.route != nil {
		rm = ex.route.metrics
	}
	rm.observe(ex.backend, ex.status, elapsed.Seconds())
	if ex.reason != ReasonNone {
		rm.fallbacks[ex.reason].Inc()
	}
	if st.accessLog {
		p.logRequest(r, ex, rm.label, elapsed)
	}
	if p.opts.Observer != nil && ex.route != nil && !ex.refused {
		p.opts.Observer.Observe(r, ex.route, Result{
			Decision: ex.decision, Backend: ex.backend, Status: ex.status,
			Fallback: ex.reason, Failure: ex.failure, Duration: elapsed,
		})
	}
}

// logRequest writes the access log line. It never logs headers, cookies or
// the query string, which may carry tokens.
func (p *Proxy) logRequest(r *http.Request, ex *exchange, route string, elapsed time.Duration) {
	attrs := [...]slog.Attr{
		slog.String("request_id", ex.reqID),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", route),
		slog.String("backend", ex.backend.String()),
		slog.Int("status", ex.status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("decision", ex.decision.Reason),
		slog.String("fallback", ex.reason.String()),
		slog.String("failure", ex.failure.String()),
	}
	p.opts.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs[:]...)
}

// newRequestID returns 32 random hex digits. The string shares the
// exchange's id array, which is written here once and never again, so the id
// costs no allocation beyond the exchange.
func (ex *exchange) newRequestID() string {
	const hex = "0123456789abcdef"
	b := &ex.id
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 16; i++ {
		b[i] = hex[a>>(4*i)&0xf]
		b[16+i] = hex[c>>(4*i)&0xf]
	}
	return unsafe.String(&b[0], len(b))
}

// rewrite aims the outbound request at the backend the decision chose.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	out := pr.Out
	pol := &ex.st.policy
	if b := out.Body; b != nil && b != http.NoBody {
		ex.body.r = b
		out.Body = &ex.body
	}
	if _, ok := pr.In.Header["Connection"]; ok {
		pol.restoreIdentity(pr.In.Header, out.Header)
	}
	if !pol.keepUnderscores {
		dropUnderscores(out.Header)
	}
	if pol.unescapeSlashes && out.URL.RawPath != "" && hasEscapedSlash(out.URL.RawPath) {
		// Forward the path the route was chosen on.
		out.URL.RawPath = ""
	}
	ex.setForwarded(pr.In, out.Header)
	if _, ok := out.Header["X-Request-Id"]; !ok {
		ex.hdr[3] = ex.reqID
		out.Header["X-Request-Id"] = ex.hdr[3:4:4]
	}
	if ex.svc != nil {
		target(out, ex.svc, ex.route)
	} else {
		target(out, ex.st.monolith, nil)
	}
}

// setForwarded sets X-Forwarded-For, -Host and -Proto on the outbound
// header h exactly as httputil.ProxyRequest.SetXForwarded does, except that
// the client's address is appended to the X-Forwarded-For chain of the
// proxies in front of us (as nginx's $proxy_add_x_forwarded_for does; Rewrite
// starts without it). The values live in the exchange's hdr array, sliced
// with their capacity capped so that an append elsewhere cannot spill into a
// neighbour, instead of one new slice per header.
func (ex *exchange) setForwarded(in *http.Request, h http.Header) {
	if clientIP, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		ex.hdr[0] = clientIP
		h["X-Forwarded-For"] = ex.hdr[0:1:1]
	} else {
		delete(h, "X-Forwarded-For")
	}
	ex.hdr[1] = in.Host
	h["X-Forwarded-Host"] = ex.hdr[1:2:2]
	ex.hdr[2] = "http"
	if in.TLS != nil {
		ex.hdr[2] = "https"
	}
	h["X-Forwarded-Proto"] = ex.hdr[2:3:3]
}

// target points out at upstream u, removing the route's prefix when the
// route says strip_prefix (route is nil for the monolith, which always gets
// the original path).
func target(out *http.Request, u *upstream, route *Route) {
	out.URL.Scheme = u.url.Scheme
	out.URL.Host = u.url.Host
	out.Host = ""
	if route != nil && route.Config.StripPrefix && route.Prefix != "/" {
		out.URL.Path = stripPrefix(out.URL.Path, route.Prefix)
		if out.URL.RawPath != "" {
			out.URL.RawPath = stripPrefix(out.URL.RawPath, route.Prefix)
		}
	}
	if u.basePath {
		out.URL.Path = joinPath(u.url.Path, out.URL.Path)
		if out.URL.RawPath != "" {
			out.URL.RawPath = joinPath(u.url.EscapedPath(), out.URL.RawPath)
		}
	}
}

func stripPrefix(path, prefix string) string {
	if len(path) < len(prefix) || path[:len(prefix)] != prefix {
		return path
	}
	rest := path[len(prefix):]
	if rest == "" {
		return "/"
	}
	return rest
}

func joinPath(base, path string) string {
	switch {
	case base[len(base)-1] == '/' && len(path) > 0 && path[0] == '/':
		return base + path[1:]
	case base[len(base)-1] != '/' && (len(path) == 0 || path[0] != '/'):
		return base + "/" + path
	}
	return base + path
}

// modifyResponse records the status of the answer the client gets.
func modifyResponse(resp *http.Response) error {
	ex := exchangeOf(resp.Request.Context())
	if ex == nil {
		return nil
	}
	ex.status = resp.StatusCode
	// A switched protocol's body is the connection itself, which
	// ReverseProxy needs as it is: never compared, and its header is
	// ReverseProxy's business.
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	if ex.capture != nil {
		ex.capture.WrapResponse(resp) // copies the header it compares
	}
	moveHeader(ex.w.Header(), resp.Header)
	return nil
}

// moveHeader does what ReverseProxy does with the answer's header right
// after ModifyResponse, adding it to the client's, but hands over the
// answer's value slices instead of appending each value to a new slice (an
// allocation per header), and removes what it moved from src so that
// ReverseProxy does not add it twice. A Content-Type that may name an event
// stream stays in src for ReverseProxy to copy: it reads it afterwards to
// decide whether to flush the answer as it comes. Any other Content-Type is
// moved, which also spares ReverseProxy parsing it (an allocation).
func moveHeader(dst, src http.Header) {
	for k, vv := range src {
		if k == "Content-Type" && mayBeEventStream(vv) {
			continue
		}
		delete(src, k)
		if len(vv) == 0 {
			continue
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		if prior, ok := dst[k]; ok {
			dst[k] = append(prior, vv...)
		} else {
			dst[k] = vv
		}
	}
}

// mayBeEventStream reports whether a Content-Type's first value could be
// text/event-stream as ReverseProxy reads it (mime.ParseMediaType: any case,
// spaces around): a broad test, as a false yes only costs the parse.
func mayBeEventStream(vv []string) bool {
	if len(vv) == 0 {
		return false
	}
	v := vv[0]
	const word = "event-stream"
	for i := 0; i+len(word) <= len(v); i++ {
		if strings.EqualFold(v[i:i+len(word)], word) {
			return true
		}
	}
	return false
}

// errorHandler answers when no backend gave an answer: 504 after a timeout,
// 502 otherwise. A client that went away gets nothing and is logged as 499.
// A request body that could not be read whole (malformed, cut short, above
// max_body) is the client's fault: 400 or 413, never 502.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	if status := ex.body.fault(); status != 0 {
		// Answered even when the connection's end was seen (the server
		// cancels the context then): a client that only closed its
		// sending half still reads, and must not get the server's empty
		// 200. Logged as 499 in that case, the client may be gone.
		ex.refused, ex.status = true, status
		if r.Context().Err() != nil {
			ex.status = 499
		}
		p.opts.Logger.Debug("request body refused", "request_id", ex.reqID, "status", status, "err", err)
		w.Header().Set("Connection", "close")
		w.WriteHeader(status)
		return
	}
	switch {
	case r.Context().Err() != nil:
		ex.status = 499
		return
	case errors.Is(err, errBreakerOpen):
		ex.status = http.StatusServiceUnavailable
	case isTimeout(err):
		ex.status = http.StatusGatewayTimeout
	default:
		ex.status = http.StatusBadGateway
	}
	p.opts.Logger.Warn("proxy error", "request_id", ex.reqID, "backend", ex.backend.String(), "err", err)
	w.WriteHeader(ex.status)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers. sync.Pool keeps
// pointers, and Put receives a slice: taking the slice's address would
// allocate a new pointer per request, so the emptied pointers of Get go to a
// second pool and carry the slices given back to Put.
type bufferPool struct {
	pool    sync.Pool // *[]byte holding a buffer
	holders sync.Pool // *[]byte holding nothing
}

const copyBufferSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}}
}

// Get implements httputil.BufferPool.
func (b *bufferPool) Get() []byte {
	h := b.pool.Get().(*[]byte)
	buf := *h
	*h = nil
	b.holders.Put(h)
	return buf
}

// Put implements httputil.BufferPool.
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	h, _ := b.holders.Get().(*[]byte)
	if h == nil {
		h = new([]byte)
	}
	*h = buf[:copyBufferSize]
	b.pool.Put(h)
}

var _ httputil.BufferPool = (*bufferPool)(nil)
