package apply

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the sync's Prometheus metrics.
type Metrics struct {
	// AppliedChanges counts row changes (and truncations) applied, by
	// target table and operation.
	AppliedChanges *prometheus.CounterVec
	// Transactions counts source transactions applied.
	Transactions prometheus.Counter
	// LagBytes is how much WAL the source has written beyond what the slot
	// may forget: what is applied, or passed as concerning no mapped table.
	LagBytes prometheus.Gauge
	// LagSeconds is the age of the last applied source commit while more
	// is waiting, 0 when caught up.
	LagSeconds prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg, if not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		AppliedChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "datasync", Subsystem: "sync", Name: "applied_changes_total",
			Help: "Row changes applied to the target, by target table and operation.",
		}, []string{"table", "op"}),
		Transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "datasync", Subsystem: "sync", Name: "transactions_total",
			Help: "Source transactions applied to the target.",
		}),
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "datasync", Subsystem: "sync", Name: "lag_bytes",
			Help: "WAL bytes the source has written beyond what is applied to the target (or concerns no mapped table).",
		}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "datasync", Subsystem: "sync", Name: "lag_seconds",
			Help: "Age of the last applied source commit while more changes wait; 0 when caught up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.AppliedChanges, m.Transactions, m.LagBytes, m.LagSeconds)
	}
	return m
}
