package statuspage

import (
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metrics the page reads, as strangler-proxy exports them (DESIGN.md).
const (
	metricRequests  = "strangler_requests_total"           // route, backend, code
	metricDuration  = "strangler_request_duration_seconds" // route, backend
	metricFallbacks = "strangler_fallbacks_total"          // route, reason
	metricShadow    = "strangler_shadow_comparisons_total" // route, result
)

// MetricsUsed lists the metric families the page reads, for the test that
// checks each is one the proxy exports.
func MetricsUsed() []string {
	return []string{metricRequests, metricDuration, metricFallbacks, metricShadow}
}

// pair is two label values, such as a route and a backend.
type pair [2]string

// histogram is one series of a histogram: cumulative counts by upper bound.
type histogram struct {
	bounds []float64
	counts []float64 // cumulative, as exported
	total  float64
}

// sample is what the page keeps of one gathering of the registry.
type sample struct {
	at        time.Time
	requests  map[pair]float64 // route, backend
	fallbacks map[pair]float64 // route, reason
	shadow    map[pair]float64 // route, result
	durations map[pair]*histogram
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// gather takes a sample of the registry.
func gather(g prometheus.Gatherer, at time.Time) (*sample, error) {
	s := &sample{at: at, requests: map[pair]float64{}, fallbacks: map[pair]float64{},
		shadow: map[pair]float64{}, durations: map[pair]*histogram{}}
	if g == nil {
		return s, nil
	}
	families, err := g.Gather()
	if err != nil {
		return s, err
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case metricRequests:
				s.requests[pair{label(m, "route"), label(m, "backend")}] += m.GetCounter().GetValue()
			case metricFallbacks:
				s.fallbacks[pair{label(m, "route"), label(m, "reason")}] += m.GetCounter().GetValue()
			case metricShadow:
				s.shadow[pair{label(m, "route"), label(m, "result")}] += m.GetCounter().GetValue()
			case metricDuration:
				h := m.GetHistogram()
				out := &histogram{total: float64(h.GetSampleCount())}
				for _, b := range h.GetBucket() {
					out.bounds = append(out.bounds, b.GetUpperBound())
					out.counts = append(out.counts, float64(b.GetCumulativeCount()))
				}
				s.durations[pair{label(m, "route"), label(m, "backend")}] = out
			}
		}
	}
	return s, nil
}

// since returns the histogram of what h counted after old: h less old,
// bucket by bucket. old nil or of other buckets (a restart) gives h.
func (h *histogram) since(old *histogram) *histogram {
	if old == nil || len(old.bounds) != len(h.bounds) || old.total > h.total {
		return h
	}
	d := &histogram{bounds: h.bounds, counts: make([]float64, len(h.counts)), total: h.total - old.total}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - old.counts[i]
	}
	return d
}

// quantile estimates the q quantile the way Prometheus's
// histogram_quantile does: linear within the bucket that holds it. It
// returns NaN when the histogram is empty, and the largest finite bound when
// the quantile lies in the +Inf bucket.
func (h *histogram) quantile(q float64) float64 {
	if h == nil || h.total == 0 || len(h.bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.total
	i := sort.Search(len(h.counts), func(i int) bool { return h.counts[i] >= rank })
	if i == len(h.counts) {
		return h.bounds[len(h.bounds)-1]
	}
	if math.IsInf(h.bounds[i], 1) {
		if i == 0 {
			return math.NaN()
		}
		return h.bounds[i-1]
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = h.bounds[i-1], h.counts[i-1]
	}
	in := h.counts[i] - below
	if in <= 0 {
		return h.bounds[i]
	}
	return lower + (h.bounds[i]-lower)*(rank-below)/in
}

// window is a sample and the older one it is compared with (nil when there
// is none yet: totals since the start are shown then).
type window struct {
	now, old *sample
}

// seconds is the window's length; 0 without an old sample.
func (w window) seconds() float64 {
	if w.old == nil {
		return 0
	}
	return w.now.at.Sub(w.old.at).Seconds()
}

// delta returns what a counter series counted over the window (its total
// without an old sample, or after a restart of the counter).
func (w window) delta(series func(*sample) map[pair]float64, k pair) float64 {
	now := series(w.now)[k]
	if w.old == nil {
		return now
	}
	old := series(w.old)[k]
	if old > now {
		return now
	}
	return now - old
}

func (w window) p99(k pair) float64 {
	h := w.now.durations[k]
	if h == nil {
		return math.NaN()
	}
	if w.old != nil {
		h = h.since(w.old.durations[k])
	}
	return h.quantile(0.99)
}
