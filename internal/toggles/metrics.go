package toggles

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the rollout metrics of DESIGN.md, plus JWT verification
// failures.
type Metrics struct {
	percentage  *prometheus.GaugeVec
	decisions   *prometheus.CounterVec
	jwtFailures *prometheus.CounterVec
}

// NewMetrics creates the rollout metrics and registers them into reg:
// strangler_rollout_percentage{flag},
// strangler_rollout_decisions_total{flag,backend,reason} and
// strangler_identity_jwt_failures_total{reason}.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	if err := m.register(reg); err != nil {
		return nil, err
	}
	return m, nil
}

func newMetrics() *Metrics {
	return &Metrics{
		percentage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "strangler", Subsystem: "rollout", Name: "percentage",
			Help: "Percentage of users a flag sends to its service (0 while the flag is disabled).",
		}, []string{"flag"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "strangler", Subsystem: "rollout", Name: "decisions_total",
			Help: "Rollout decisions by flag, chosen backend and the rule that decided.",
		}, []string{"flag", "backend", "reason"}),
		jwtFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "strangler", Subsystem: "identity", Name: "jwt_failures_total",
			Help: "Tokens that were present but not believed, by reason.",
		}, []string{"reason"}),
	}
}

func (m *Metrics) register(reg prometheus.Registerer) error {
	// Every reason starts at 0, so that increase() and rate() see the
	// first failure too.
	for _, reason := range []string{JWTMalformed, JWTBadSignature, JWTWrongAlg, JWTExpired, JWTNotYetValid, JWTMissingClaim, JWTInvalid} {
		m.jwtFailures.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{m.percentage, m.decisions, m.jwtFailures} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register rollout metrics: %w", err)
		}
	}
	return nil
}

// ObserveDecision counts one decision.
func (m *Metrics) ObserveDecision(flag string, d Decision) {
	m.decisions.WithLabelValues(flag, d.Backend(), d.Reason).Inc()
}

// JWTFailure counts one token not believed; use it as
// ResolverConfig.OnJWTFailure.
func (m *Metrics) JWTFailure(reason string) {
	m.jwtFailures.WithLabelValues(reason).Inc()
}

// SetPercentages sets the percentage gauge from a snapshot, dropping flags
// that are gone; use it as StoreOptions.OnChange (and once at start).
func (m *Metrics) SetPercentages(s *Snapshot) {
	m.percentage.Reset()
	for _, key := range s.FlagKeys() {
		f, _ := s.Flag(key)
		pct := f.Percentage
		if !f.IsEnabled() {
			pct = 0
		}
		m.percentage.WithLabelValues(key).Set(pct)
	}
}

// registerFleetMetrics adds strangler_flags_revision and
// strangler_flags_store_up for a store in fleet mode.
func registerFleetMetrics(reg prometheus.Registerer, s *Store, fl Fleet) error {
	rev := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strangler_flags_revision",
		Help: "Revision of the shared flags store this replica serves.",
	}, func() float64 { return float64(s.Snapshot().Revision()) })
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strangler_flags_store_up",
		Help: "1 when the shared flags store (PostgreSQL) answered the last read, else 0.",
	}, func() float64 {
		if fl.Up() {
			return 1
		}
		return 0
	})
	if err := reg.Register(rev); err != nil {
		return fmt.Errorf("register strangler_flags_revision: %w", err)
	}
	if err := reg.Register(up); err != nil {
		reg.Unregister(rev)
		return fmt.Errorf("register strangler_flags_store_up: %w", err)
	}
	return nil
}
