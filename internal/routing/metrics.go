package routing

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the proxy's metric vectors (DESIGN.md, "Admin listener and
// metrics"). The per-request path uses children resolved once per route
// (routeMetrics), not WithLabelValues.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	fallbacks *prometheus.CounterVec

	mu     sync.Mutex
	routes map[string]*routeMetrics // by route label; kept across reloads
}

// durationBuckets reach down to a millisecond: most proxied answers are fast.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "strangler", Name: "requests_total",
			Help: "Requests answered, by route, backend that answered (service or monolith) and status code.",
		}, []string{"route", "backend", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "strangler", Name: "request_duration_seconds",
			Help:    "Time from receiving a request to the end of its answer, by route and backend that answered.",
			Buckets: durationBuckets,
		}, []string{"route", "backend"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "strangler", Name: "fallbacks_total",
			Help: "Requests for a service answered by the monolith instead, by route and reason.",
		}, []string{"route", "reason"}),
		routes: make(map[string]*routeMetrics),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.fallbacks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// route returns the children of a route label, creating them on first use.
func (m *metrics) route(label string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm, ok := m.routes[label]; ok {
		return rm
	}
	rm := &routeMetrics{label: label, requests: m.requests}
	for b := range rm.duration {
		rm.duration[b] = m.duration.WithLabelValues(label, Backend(b).String())
	}
	for r := Reason(1); r < numReasons; r++ {
		rm.fallbacks[r] = m.fallbacks.WithLabelValues(label, r.String())
	}
	m.routes[label] = rm
	return rm
}

// routeMetrics are one route's metric children.
type routeMetrics struct {
	label     string
	requests  *prometheus.CounterVec
	duration  [2]prometheus.Observer
	fallbacks [numReasons]prometheus.Counter
	codes     [2][600]atomic.Pointer[prometheus.Counter]
}

// observe records one answered request.
func (rm *routeMetrics) observe(b Backend, code int, seconds float64) {
	rm.duration[b].Observe(seconds)
	rm.counter(b, code).Inc()
}

// counter returns the requests_total child of a backend and code, resolving
// it once.
func (rm *routeMetrics) counter(b Backend, code int) prometheus.Counter {
	if code < 0 || code >= len(rm.codes[b]) {
		return rm.requests.WithLabelValues(rm.label, b.String(), strconv.Itoa(code))
	}
	slot := &rm.codes[b][code]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := rm.requests.WithLabelValues(rm.label, b.String(), strconv.Itoa(code))
	slot.Store(&c)
	return c
}
