package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/strangler-fig/strangler/internal/proxyconfig"
)

// upstream is the monolith or a service: its address, its connection pool,
// and for a service its breaker and health state.
type upstream struct {
	name      string
	url       *url.URL
	basePath  bool // url has a path to prepend
	settings  string
	transport *http.Transport                            // requests with a body, upgrades, https, health checks
	rt        *h1Transport                               // everything; hands to transport what it does not do itself
	breaker   *gobreaker.TwoStepCircuitBreaker[struct{}] // nil for the monolith
	healthy   atomic.Bool

	health    proxyconfig.HealthConfig
	timeout   time.Duration
	stop      context.CancelFunc
	stopped   chan struct{}
	logger    *slog.Logger
	checkedAt atomic.Int64 // unix nanoseconds of the last health check
}

// connectError marks a failure to open a connection: the upstream never saw
// the request.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

var (
	// errClientGone is reported to a breaker when the client went away;
	// breakers exclude it.
	errClientGone = errors.New("client went away")
	// errStatus5xx is reported to a breaker when the service answered 5xx.
	errStatus5xx = errors.New("service answered 5xx")
	// errBreakerOpen answers a request for a service whose breaker is open
	// (or whose health check fails) when its route does not fall back on
	// breaker_open.
	errBreakerOpen = errors.New("service unavailable: breaker open or health check failing")
)

func newUpstream(name, rawURL string, timeout time.Duration, logger *slog.Logger) (*upstream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	up := &upstream{
		name:     name,
		url:      u,
		basePath: u.Path != "" && u.Path != "/",
		timeout:  timeout,
		logger:   logger.With("upstream", name),
	}
	up.transport = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &connectError{err: err}
			}
			return c, nil
		},
		// A proxy in front of a busy app keeps many connections per host
		// warm: the default of 2 makes every burst pay for new connections.
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		// The client's Accept-Encoding goes through as sent; the transport must
		// not add gzip and unpack answers behind the client's back.
		DisableCompression: true,
		ForceAttemptHTTP2:  u.Scheme == "https",
	}
	up.rt = newH1Transport(up.transport, u.Host, hostPort(u.Scheme, u.Host), timeout)
	up.healthy.Store(true)
	return up, nil
}

func newService(name string, sc *proxyconfig.ServiceConfig, logger *slog.Logger) (*upstream, error) {
	up, err := newUpstream(name, sc.URL, sc.Timeout.D(), logger)
	if err != nil {
		return nil, err
	}
	up.settings = fmt.Sprintf("%+v", *sc)
	up.health = sc.Health
	failures := uint32(sc.Breaker.ConsecutiveFailures)
	up.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one probe in half-open
		Timeout:     sc.Breaker.OpenFor.D(),
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errClientGone) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			up.logger.Warn("breaker state changed", "from", from.String(), "to", to.String())
		},
	})
	return up, nil
}

// breakerState is the breaker's state; the monolith has none and is always
// closed.
func (u *upstream) breakerState() gobreaker.State {
	if u.breaker == nil {
		return gobreaker.StateClosed
	}
	return u.breaker.State()
}

// startHealth starts the health check loop when the service has one.
func (u *upstream) startHealth(parent context.Context) {
	if u.health.Path == "" || u.health.Interval <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(parent)
	u.stop, u.stopped = cancel, make(chan struct{})
	go u.healthLoop(ctx)
}

// close stops the health loop and closes the upstream's connections once
// idle. Requests in flight on the upstream finish normally.
func (u *upstream) close() {
	if u.stop != nil {
		u.stop()
		<-u.stopped
	}
	u.rt.close()
}

func (u *upstream) healthLoop(ctx context.Context) {
	defer close(u.stopped)
	defer func() {
		if v := recover(); v != nil {
			u.logger.Error("health check loop panicked", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	client := &http.Client{
		Transport: u.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	target := u.url.JoinPath(u.health.Path).String()
	ticker := time.NewTicker(u.health.Interval.D())
	defer ticker.Stop()
	for {
		err := u.check(ctx, client, target)
		if ctx.Err() != nil {
			return
		}
		u.checkedAt.Store(time.Now().UnixNano())
		if was := u.healthy.Swap(err == nil); was != (err == nil) {
			if err != nil {
				u.logger.Warn("service unhealthy: sending its requests to the monolith", "err", err)
			} else {
				u.logger.Info("service healthy again")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (u *upstream) check(ctx context.Context, client *http.Client, target string) error {
	// The service's own timeout: a check that overruns the interval makes
	// the ticker skip a beat, it does not pile up checks.
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	req.Header.Set("User-Agent", "strangler-proxy-health")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("health check: status %d", resp.StatusCode)
	}
	return nil
}

// upstreamCollector reports strangler_breaker_state and
// strangler_upstream_healthy from the live state at each scrape, so that a
// breaker that became half-open with no traffic shows it, and removed
// services disappear.
type upstreamCollector struct {
	p       *Proxy
	breaker *prometheus.Desc
	healthy *prometheus.Desc
}

func newUpstreamCollector(p *Proxy) *upstreamCollector {
	return &upstreamCollector{
		p: p,
		breaker: prometheus.NewDesc("strangler_breaker_state",
			"Circuit breaker state per service: 0 closed, 1 half-open, 2 open.", []string{"service"}, nil),
		healthy: prometheus.NewDesc("strangler_upstream_healthy",
			"Whether the service passes its active health check (1) or not (0); 1 without a health check.", []string{"service"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.breaker
	ch <- c.healthy
}

// Collect implements prometheus.Collector.
func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.state.Load()
	if st == nil {
		return
	}
	for name, u := range st.services {
		ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, float64(breakerGauge(u.breakerState())), name)
		h := 0.0
		if u.healthy.Load() {
			h = 1
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, h, name)
	}
}

// breakerGauge maps a breaker state to the metric's value (DESIGN.md: 0
// closed, 1 half-open, 2 open), independent of gobreaker's numbering.
func breakerGauge(s gobreaker.State) int {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

var _ prometheus.Collector = (*upstreamCollector)(nil)
