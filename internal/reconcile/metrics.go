package reconcile

import (
	"context"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// PushJob is the Pushgateway job the metrics are pushed under.
const PushJob = "datasync_verify"

// Registry returns a new registry holding the metrics of DESIGN.md for the
// report, finished at now: rows per side, differences per kind, whether each
// table is consistent, how long it took, and when the run ended. table is
// the target's qualified name.
func (r *Report) Registry(now time.Time) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	rows := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "datasync", Subsystem: "verify", Name: "rows",
		Help: "Rows of the table on each side (source: after the mapping's filter).",
	}, []string{"table", "side"})
	differences := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "datasync", Subsystem: "verify", Name: "differences",
		Help: "Rows found different, by kind: missing_in_target, extra_in_target, mismatched; two-way also missing_in_source, extra_in_source.",
	}, []string{"table", "kind"})
	consistent := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "datasync", Subsystem: "verify", Name: "consistent",
		Help: "1 if the table is consistent (after repair, if any), else 0.",
	}, []string{"table"})
	duration := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "datasync", Subsystem: "verify", Name: "duration_seconds",
		Help: "How long verifying the table took.",
	}, []string{"table"})
	lastRun := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "datasync", Subsystem: "verify", Name: "last_run_timestamp_seconds",
		Help: "When the last verify run finished, in Unix seconds.",
	})
	reg.MustRegister(rows, differences, consistent, duration, lastRun)
	for _, t := range r.Tables {
		rows.WithLabelValues(t.Target, "source").Set(float64(t.SourceRows))
		rows.WithLabelValues(t.Target, "target").Set(float64(t.TargetRows))
		differences.WithLabelValues(t.Target, "missing_in_target").Set(float64(t.MissingInTarget))
		differences.WithLabelValues(t.Target, "extra_in_target").Set(float64(t.ExtraInTarget))
		differences.WithLabelValues(t.Target, "mismatched").Set(float64(t.Mismatched))
		if t.TwoWay {
			differences.WithLabelValues(t.Target, "missing_in_source").Set(float64(t.MissingInSource))
			differences.WithLabelValues(t.Target, "extra_in_source").Set(float64(t.ExtraInSource))
		}
		c := 0.0
		if t.Consistent {
			c = 1
		}
		consistent.WithLabelValues(t.Target).Set(c)
		duration.WithLabelValues(t.Target).Set(t.Duration.Seconds())
	}
	lastRun.Set(float64(now.UnixNano()) / 1e9)
	return reg
}

// WriteTextfile writes the registry's metrics in the Prometheus text format
// to path for node_exporter's textfile collector, atomically: a temporary
// file in the same folder, renamed over path.
func WriteTextfile(path string, reg prometheus.Gatherer) error {
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return fmt.Errorf("write metrics to %s: %w", path, err)
	}
	return nil
}

// Push replaces the metrics of job PushJob on the Pushgateway at url with the
// registry's.
func Push(ctx context.Context, url string, reg prometheus.Gatherer, client *http.Client) error {
	// The text format, so that a Pushgateway's logs and a test read it.
	p := push.New(url, PushJob).Gatherer(reg).Format(expfmt.NewFormat(expfmt.TypeTextPlain))
	if client != nil {
		p = p.Client(client)
	}
	if err := p.PushContext(ctx); err != nil {
		// The error may quote the URL; a password in it must not show.
		shown := "the Pushgateway"
		if u, perr := neturl.Parse(url); perr == nil {
			shown = u.Redacted()
			if pw, ok := u.User.Password(); ok && pw != "" {
				return fmt.Errorf("push metrics to %s: %s", shown, strings.ReplaceAll(err.Error(), pw, "xxxxx"))
			}
		}
		return fmt.Errorf("push metrics to %s: %w", shown, err)
	}
	return nil
}
