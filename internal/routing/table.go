package routing

import (
	"net/http"
	"sort"
	"strings"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
)

// Backend says who answers a request.
type Backend uint8

// Backends, as in the backend label of the metrics.
const (
	BackendMonolith Backend = iota
	BackendService
)

// String is the backend's metric label.
func (b Backend) String() string {
	if b == BackendService {
		return "service"
	}
	return "monolith"
}

// Reason is why a request fell back to the monolith.
type Reason uint8

// Fallback reasons; ReasonNone means no fallback.
const (
	ReasonNone Reason = iota
	ReasonConnectError
	ReasonTimeout
	ReasonStatus5xx
	ReasonBreakerOpen
	numReasons
)

var reasonNames = [numReasons]string{"", proxyconfig.ReasonConnectError, proxyconfig.ReasonTimeout, proxyconfig.ReasonStatus5xx, proxyconfig.ReasonBreakerOpen}

// String is the reason's name in the config and the metrics ("" for none).
func (r Reason) String() string { return reasonNames[r] }

func parseReason(s string) Reason {
	for i, n := range reasonNames {
		if i > 0 && n == s {
			return Reason(i)
		}
	}
	return ReasonNone
}

// UnroutedLabel is the route label of requests that match no route.
const UnroutedLabel = "unrouted"

// Route is a compiled route. Its fields are read-only once the route is in a
// Table.
type Route struct {
	// Label names the route in metrics and logs: its name, else its prefix.
	Label string
	// Prefix is the normalized prefix (no trailing slash, except "/").
	Prefix string
	// Service names the service the route sends requests to.
	Service string
	// Flag is the rollout flag; empty sends every request to the service.
	Flag string
	// Config is the route as written in the config file.
	Config proxyconfig.RouteConfig

	methods   []string
	fallback  [numReasons]bool
	svc       *upstream
	metrics   *routeMetrics
	unsafeRep bool
	shadowed  bool  // has a shadow config with a percentage above 0
	maxBody   int64 // max_body; 0 for no limit
}

// AllowsMethod reports whether a request with this method may go to the
// service (a route without methods allows every method).
func (r *Route) AllowsMethod(method string) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if m == method {
			return true
		}
	}
	return false
}

// FallsBackOn reports whether the route's fallback list has reason.
func (r *Route) FallsBackOn(reason Reason) bool { return r.fallback[reason] }

// newRoute compiles a route from its configuration.
func newRoute(rc proxyconfig.RouteConfig) *Route {
	r := &Route{
		Label:     rc.RouteLabel(),
		Prefix:    proxyconfig.NormalizePrefix(rc.Prefix),
		Service:   rc.Service,
		Flag:      rc.Flag,
		Config:    rc,
		methods:   rc.Methods,
		unsafeRep: rc.ReplayUnsafe,
		shadowed:  rc.Shadow != nil && rc.Shadow.Percentage > 0,
	}
	for _, s := range rc.Fallback {
		r.fallback[parseReason(s)] = true
	}
	if rc.MaxBody != nil {
		r.maxBody = int64(*rc.MaxBody)
	}
	r.fallback[ReasonNone] = false
	return r
}

// TableOf compiles the routes of a configuration into a table, without the
// proxy's connections and metrics: for tools that only ask which route a
// request takes.
func TableOf(cfg *proxyconfig.Config) *Table {
	routes := make([]*Route, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		routes = append(routes, newRoute(rc))
	}
	return NewTable(routes)
}

// Table finds the route of a path. It is immutable and safe for concurrent
// use.
type Table struct {
	routes   []*Route          // longest prefix first
	byPrefix map[string]*Route // for large tables
	root     *Route            // the route of "/", if any
	longest  int               // length of the longest prefix
}

// linearMax is the table size up to which a scan beats map lookups.
const linearMax = 12

// NewTable builds a table from routes; prefixes must be unique.
func NewTable(routes []*Route) *Table {
	sorted := append([]*Route(nil), routes...)
	sort.SliceStable(sorted, func(i, j int) bool { return len(sorted[i].Prefix) > len(sorted[j].Prefix) })
	t := &Table{routes: sorted}
	if len(sorted) > linearMax {
		t.byPrefix = make(map[string]*Route, len(sorted))
		for _, r := range sorted {
			if r.Prefix == "/" {
				t.root = r
			} else {
				t.byPrefix[r.Prefix] = r
			}
			t.longest = max(t.longest, len(r.Prefix))
		}
	}
	return t
}

// Routes lists the table's routes, longest prefix first.
func (t *Table) Routes() []*Route { return t.routes }

// Match returns the route with the longest prefix that matches path on a
// path-segment boundary, or nil. "/api/user" matches "/api/user" and
// "/api/user/7" but not "/api/users". It does not allocate.
func (t *Table) Match(path string) *Route {
	if t.byPrefix != nil {
		return t.lookup(path)
	}
	for _, r := range t.routes {
		if matchPrefix(r.Prefix, path) {
			return r
		}
	}
	return nil
}

// lookup tries path and each of its parents on segment boundaries, longest
// first: one map lookup per segment, whatever the size of the table.
func (t *Table) lookup(path string) *Route {
	p := path
	if len(p) > t.longest {
		// No prefix is longer: start at the last boundary within reach.
		i := strings.LastIndexByte(p[:t.longest+1], '/')
		if i < 0 {
			return t.root
		}
		p = p[:i]
	}
	for len(p) > 0 {
		if r, ok := t.byPrefix[p]; ok {
			return r
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return t.root
}

func matchPrefix(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// Decision is where a request goes and why.
type Decision struct {
	// Backend is BackendService or BackendMonolith.
	Backend Backend
	// Reason is a short, bounded label (fit for metrics) explaining the
	// decision, such as "no_flag" or "flag_unavailable".
	Reason string
	// SetCookie, when set, is added to the answer, such as the random id
	// cookie that makes an anonymous visitor's bucket sticky.
	SetCookie *http.Cookie
}

// Rollout decides, for a request whose route has a service, whether the
// service or the monolith gets it. It is the seam for rollout flags: it must
// be safe for concurrent use and must not read the request body.
type Rollout interface {
	Decide(r *http.Request, route *Route) Decision
}

// RolloutFunc adapts a function to Rollout.
type RolloutFunc func(r *http.Request, route *Route) Decision

// Decide calls f.
func (f RolloutFunc) Decide(r *http.Request, route *Route) Decision { return f(r, route) }

var _ Rollout = RolloutFunc(nil)

// Decision reasons of DefaultRollout and of the proxy itself.
const (
	DecisionNoFlag          = "no_flag"
	DecisionFlagUnavailable = "flag_unavailable"
	DecisionNoRoute         = "no_route"
	DecisionMethod          = "method_not_routed"
)

// DefaultRollout sends a route without flag to its service and a route with a
// flag to the monolith: with no flag provider, a flag cannot be evaluated,
// and a flag that cannot be evaluated means the monolith (DESIGN.md).
func DefaultRollout(_ *http.Request, route *Route) Decision {
	if route.Flag == "" {
		return Decision{Backend: BackendService, Reason: DecisionNoFlag}
	}
	return Decision{Backend: BackendMonolith, Reason: DecisionFlagUnavailable}
}
