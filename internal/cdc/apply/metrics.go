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
	// Conflicts counts the conflicts of two-way sync, by the table they
	// were met in, kind and resolution (source_won, target_won, parked).
	Conflicts *prometheus.CounterVec

	// reverse are the metrics of the reverse direction of a two-way sync
	// (target → source), named datasync_sync_to_source_*; their
	// Conflicts are these.
	reverse *Metrics
}

// NewMetrics creates the metrics and registers them with reg, if not nil.
// The datasync_sync_* metrics describe the source → target stream; a
// two-way sync also reports its target → source stream as
// datasync_sync_to_source_* with the same names after the prefix.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := newDirectionMetrics("sync", "target", "source")
	m.Conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "datasync", Subsystem: "sync", Name: "conflicts_total",
		Help: "Conflicts of two-way sync (a row changed on both sides before either change reached the other, or a change the other side refused), by table, kind and resolution.",
	}, []string{"table", "kind", "resolution"})
	m.reverse = newDirectionMetrics("sync_to_source", "source", "target")
	m.reverse.Conflicts = m.Conflicts
	if reg != nil {
		reg.MustRegister(m.AppliedChanges, m.Transactions, m.LagBytes, m.LagSeconds, m.Conflicts,
			m.reverse.AppliedChanges, m.reverse.Transactions, m.reverse.LagBytes, m.reverse.LagSeconds)
	}
	return m
}

// newDirectionMetrics creates the metrics of one direction, applying into
// the database into and reading from the database from.
func newDirectionMetrics(subsystem, into, from string) *Metrics {
	return &Metrics{
		AppliedChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "datasync", Subsystem: subsystem, Name: "applied_changes_total",
			Help: "Row changes applied to the " + into + ", by " + into + " table and operation.",
		}, []string{"table", "op"}),
		Transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "datasync", Subsystem: subsystem, Name: "transactions_total",
			Help: "Transactions of the " + from + " applied to the " + into + ".",
		}),
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "datasync", Subsystem: subsystem, Name: "lag_bytes",
			Help: "WAL bytes the " + from + " has written beyond what is applied to the " + into + " (or concerns no mapped table).",
		}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "datasync", Subsystem: subsystem, Name: "lag_seconds",
			Help: "Age of the last applied " + from + " commit while more changes wait; 0 when caught up.",
		}),
	}
}
