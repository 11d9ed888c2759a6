package statuspage

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/shadow"
	"github.com/strangler-fig/strangler/internal/toggles"
)

//go:embed page.html.tmpl
var templates embed.FS

// Options configure a Page. Admin is required.
type Options struct {
	// Admin is the admin listener's handler: the page reads the admin API
	// through it and sends its writes to it.
	Admin http.Handler
	// Gatherer is the registry behind /metrics; nil shows no traffic.
	Gatherer prometheus.Gatherer
	// Refresh is how often the page reloads itself; 5s when zero.
	Refresh time.Duration
	// Window is how far back rates and the p99 look; 1m when zero.
	Window time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives failed reads of the admin API; nil discards.
	Logger *slog.Logger
}

// Page serves the status page (GET /) and its form writes (POST
// /ui/flags/{key}).
type Page struct {
	opts Options
	tmpl *template.Template

	mu      sync.Mutex
	samples []*sample // oldest first, at most one per Refresh/2
}

// New returns the page.
func New(opts Options) (*Page, error) {
	if opts.Admin == nil {
		return nil, fmt.Errorf("status page: no admin handler")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 5 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("page.html.tmpl").Funcs(template.FuncMap{
		"lower": strings.ToLower,
	}).ParseFS(templates, "page.html.tmpl")
	if err != nil {
		return nil, fmt.Errorf("status page: %w", err)
	}
	return &Page{opts: opts, tmpl: tmpl}, nil
}

// Mount registers the page's endpoints with mount, such as the admin
// server's Handle: GET / and POST /ui/flags/{key}. The form endpoint needs
// no bearer header: the token comes in the form and goes on to the admin
// API, which checks it.
func (p *Page) Mount(mount func(pattern string, h http.Handler)) {
	mount("GET /{$}", http.HandlerFunc(p.serve))
	mount("POST /ui/flags/{key}", http.HandlerFunc(p.write))
}

// view is what the template shows.
type view struct {
	Now      string
	Refresh  int
	Window   string // "over the last 55s", or "since the start"
	Monolith string
	Routes   []routeView
	Services []routing.ServiceStatus
	Flags    []flagView
	Shadow   []shadowView
	Fleet    bool
	Replicas []map[string]string
	Columns  []string // of Replicas
	Notice   string   // the outcome of the last write
	Problems []string // reads that failed
}

type routeView struct {
	Route, Prefix, Service, Flag, Methods string
	Percentage                            string
	ServiceRate, MonolithRate             string
	Fallbacks                             []string // "timeout 0.20/s"
	FallbackShare                         string   // of what the service was sent
	ServiceP99, MonolithP99               string
	Breaker                               string
	Health                                string
	Healthy                               bool
}

type flagView struct {
	toggles.FlagView
	Guard, Ramp string
	CanResume   bool
}

type shadowView struct {
	Route                string
	Match, Mismatch, Err string
	Samples              []shadow.Mismatch
	Link                 string
}

func (p *Page) serve(w http.ResponseWriter, r *http.Request) {
	v := p.build(r)
	v.Notice = r.URL.Query().Get("notice")
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, v); err != nil {
		p.opts.Logger.Error("status page", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// get reads an admin API endpoint into v; false (with a problem noted) when
// it failed, notFound when the endpoint does not exist.
func (p *Page) get(r *http.Request, path string, v any, problems *[]string) (ok bool) {
	rec := p.call(r, http.MethodGet, path, "", nil)
	if rec.code == http.StatusNotFound {
		return false
	}
	if rec.code != http.StatusOK {
		*problems = append(*problems, fmt.Sprintf("GET %s: %d %s", path, rec.code, strings.TrimSpace(rec.body.String())))
		return false
	}
	if err := json.Unmarshal(rec.body.Bytes(), v); err != nil {
		*problems = append(*problems, fmt.Sprintf("GET %s: %v", path, err))
		return false
	}
	return true
}

func (p *Page) build(r *http.Request) *view {
	v := &view{Now: p.opts.Now().UTC().Format(time.RFC3339), Refresh: int(p.opts.Refresh / time.Second)}
	var st routing.Status
	p.get(r, "/admin/", &st, &v.Problems)
	var flags toggles.FlagList
	p.get(r, "/admin/flags", &flags, &v.Problems)
	var sh struct {
		Routes []shadow.RouteReport `json:"routes"`
	}
	p.get(r, "/admin/shadow/mismatches", &sh, &v.Problems)
	var replicas struct {
		Replicas []map[string]any `json:"replicas"`
	}
	v.Fleet = p.get(r, "/admin/replicas", &replicas, &v.Problems)
	v.Replicas, v.Columns = table(replicas.Replicas)

	win, err := p.window()
	if err != nil {
		v.Problems = append(v.Problems, "metrics: "+err.Error())
	}
	if s := win.seconds(); s > 0 {
		v.Window = fmt.Sprintf("over the last %.0fs", s)
	} else {
		v.Window = "since the start (rates from the next refresh on)"
	}

	v.Monolith = st.Monolith
	v.Services = st.Services
	services := map[string]routing.ServiceStatus{}
	for _, s := range st.Services {
		services[s.Name] = s
	}
	byKey := map[string]toggles.FlagView{}
	for _, f := range flags.Flags {
		// The list leaves out the guard's and ramp's run-time state; the
		// flag's own endpoint has it.
		var one toggles.FlagView
		if p.get(r, "/admin/flags/"+url.PathEscape(f.Key), &one, &v.Problems) {
			f = one
		}
		byKey[f.Key] = f
		v.Flags = append(v.Flags, flagOf(f))
	}
	for _, rt := range st.Routes {
		v.Routes = append(v.Routes, routeOf(rt, byKey, services, win))
	}
	for _, rep := range sh.Routes {
		v.Shadow = append(v.Shadow, shadowOf(rep, win))
	}
	return v
}

func routeOf(rt routing.RouteStatus, flags map[string]toggles.FlagView, services map[string]routing.ServiceStatus, win window) routeView {
	out := routeView{Route: rt.Label, Prefix: rt.Prefix, Service: rt.Service, Flag: rt.Flag,
		Methods: strings.Join(rt.Methods, ", "), Percentage: "100% (no flag)"}
	if out.Methods == "" {
		out.Methods = "all"
	}
	if rt.Flag != "" {
		f, ok := flags[rt.Flag]
		switch {
		case !ok:
			out.Percentage = "0% (flag missing)"
		case !f.Enabled:
			out.Percentage = "0% (disabled)"
		default:
			out.Percentage = formatPct(f.Percentage)
		}
	}
	secs := win.seconds()
	requests := func(s *sample) map[pair]float64 { return s.requests }
	fallbacks := func(s *sample) map[pair]float64 { return s.fallbacks }
	toService := win.delta(requests, pair{rt.Label, "service"})
	out.ServiceRate = rate(toService, secs)
	out.MonolithRate = rate(win.delta(requests, pair{rt.Label, "monolith"}), secs)
	var reasons []string
	for k := range win.now.fallbacks {
		if k[0] == rt.Label {
			reasons = append(reasons, k[1])
		}
	}
	sort.Strings(reasons)
	var fell float64
	for _, reason := range reasons {
		n := win.delta(fallbacks, pair{rt.Label, reason})
		if n == 0 {
			continue
		}
		fell += n
		out.Fallbacks = append(out.Fallbacks, reason+" "+rate(n, secs))
	}
	// A fallback is answered by the monolith but was meant for the service:
	// its share is of what the flag sent to the service.
	if sent := toService + fell; sent > 0 {
		out.FallbackShare = fmt.Sprintf("%.1f%%", 100*fell/sent)
	} else {
		out.FallbackShare = "–"
	}
	out.ServiceP99 = duration(win.p99(pair{rt.Label, "service"}))
	out.MonolithP99 = duration(win.p99(pair{rt.Label, "monolith"}))
	if s, ok := services[rt.Service]; ok {
		out.Breaker = s.Breaker
		out.Health, out.Healthy = "healthy", s.Healthy
		if !s.Healthy {
			out.Health = "unhealthy"
		}
		if s.LastCheck == nil {
			out.Health += " (no health check)"
		}
	}
	return out
}

func flagOf(f toggles.FlagView) flagView {
	out := flagView{FlagView: f, Guard: "no guard", Ramp: "no ramp"}
	if st := f.State; st != nil {
		if st.GuardSummary != "" {
			out.Guard = st.GuardSummary
		}
		if st.Guard != nil && st.Guard.Tripped {
			out.CanResume = true
		}
		if rs := st.Ramp; rs != nil {
			switch {
			case rs.Stopped:
				out.Ramp = "stopped: " + rs.StoppedReason
				out.CanResume = true
			case rs.Done:
				out.Ramp = "done at " + formatPct(rs.LastStep)
			case rs.LastStep == 0:
				out.Ramp = "started, no step taken yet"
			default:
				out.Ramp = "stepping, last step " + formatPct(rs.LastStep)
			}
		}
	}
	if f.Guard != nil && out.Guard == "no guard" {
		out.Guard = "configured, not yet evaluated"
	}
	if f.Ramp != nil && out.Ramp == "no ramp" {
		out.Ramp = "not started"
	}
	return out
}

func shadowOf(rep shadow.RouteReport, win window) shadowView {
	out := shadowView{Route: rep.Route, Link: "/admin/shadow/mismatches?route=" + url.QueryEscape(rep.Route)}
	results := func(s *sample) map[pair]float64 { return s.shadow }
	out.Match = strconv.FormatFloat(win.delta(results, pair{rep.Route, "match"}), 'f', 0, 64)
	out.Mismatch = strconv.FormatFloat(win.delta(results, pair{rep.Route, "mismatch"}), 'f', 0, 64)
	out.Err = strconv.FormatFloat(win.delta(results, pair{rep.Route, "error"}), 'f', 0, 64)
	out.Samples = rep.Mismatches
	if len(out.Samples) > 3 {
		out.Samples = out.Samples[len(out.Samples)-3:]
	}
	return out
}

// table turns the replicas' JSON objects into rows of text and the sorted
// union of their keys.
func table(objs []map[string]any) ([]map[string]string, []string) {
	seen := map[string]bool{}
	var cols []string
	var rows []map[string]string
	for _, o := range objs {
		row := map[string]string{}
		for k, val := range o {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
			row[k] = fmt.Sprint(val)
		}
		rows = append(rows, row)
	}
	sort.Strings(cols)
	return rows, cols
}

// window gathers a new sample and returns it with the oldest kept sample no
// older than Window. Samples are kept at most one per half refresh.
func (p *Page) window() (window, error) {
	now := p.opts.Now()
	s, err := gather(p.opts.Gatherer, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.samples[:0]
	for _, old := range p.samples {
		if now.Sub(old.at) <= p.opts.Window {
			keep = append(keep, old)
		}
	}
	p.samples = keep
	w := window{now: s}
	if len(p.samples) > 0 && now.Sub(p.samples[0].at) >= time.Second {
		w.old = p.samples[0]
	}
	if err == nil && (len(p.samples) == 0 || now.Sub(p.samples[len(p.samples)-1].at) >= p.opts.Refresh/2) {
		p.samples = append(p.samples, s)
	}
	return w, err
}

func rate(n, secs float64) string {
	if secs <= 0 {
		return strconv.FormatFloat(n, 'f', 0, 64) + " total"
	}
	return strconv.FormatFloat(n/secs, 'f', 2, 64) + "/s"
}

func duration(secs float64) string {
	if math.IsNaN(secs) {
		return "–"
	}
	return time.Duration(secs * float64(time.Second)).Round(100 * time.Microsecond).String()
}

func formatPct(p float64) string {
	return strconv.FormatFloat(p, 'f', -1, 64) + "%"
}

// write takes a form from the page and sends the matching admin API write
// with the form's token: action set (with percentage), enable, disable or
// resume.
func (p *Page) write(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "status page: the form could not be read: "+err.Error(), http.StatusBadRequest)
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		http.Error(w, "status page: changing a flag needs the admin token (admin.token_env): enter it in the form's token field", http.StatusUnauthorized)
		return
	}
	var method, path, body, done string
	switch action := r.PostForm.Get("action"); action {
	case "set":
		pct, err := strconv.ParseFloat(strings.TrimSpace(r.PostForm.Get("percentage")), 64)
		if err != nil {
			http.Error(w, "status page: percentage: a number from 0 to 100, such as 25 or 12.5", http.StatusBadRequest)
			return
		}
		method, path = http.MethodPut, "/admin/flags/"+url.PathEscape(key)
		body, done = fmt.Sprintf(`{"percentage": %s}`, strconv.FormatFloat(pct, 'f', -1, 64)), key+" set to "+formatPct(pct)
	case "enable", "disable":
		method, path = http.MethodPut, "/admin/flags/"+url.PathEscape(key)
		body, done = fmt.Sprintf(`{"enabled": %t}`, action == "enable"), key+" "+action+"d"
	case "resume":
		method, path, done = http.MethodPost, "/admin/flags/"+url.PathEscape(key)+"/resume", key+" resumed"
	default:
		http.Error(w, fmt.Sprintf("status page: action %q: want set, enable, disable or resume", action), http.StatusBadRequest)
		return
	}
	rec := p.call(r, method, path, token, strings.NewReader(body))
	if rec.code/100 != 2 {
		var apiErr toggles.APIError
		msg := strings.TrimSpace(rec.body.String())
		if json.Unmarshal(rec.body.Bytes(), &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		http.Error(w, fmt.Sprintf("status page: %s %s: %d: %s", method, path, rec.code, msg), rec.code)
		return
	}
	http.Redirect(w, r, "/?notice="+url.QueryEscape(done), http.StatusSeeOther)
}

// call sends a request to the admin handler in process and returns its
// answer. The request keeps the caller's context; token, when set, is sent
// as the bearer token.
func (p *Page) call(r *http.Request, method, path, token string, body io.Reader) *recorder {
	req, err := http.NewRequestWithContext(r.Context(), method, path, body)
	rec := &recorder{header: http.Header{}}
	if err != nil {
		rec.code = http.StatusInternalServerError
		rec.body.WriteString(err.Error())
		return rec
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	p.opts.Admin.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	return rec
}

// recorder is the http.ResponseWriter of an in-process admin call.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
