// Package deploy holds what runs Strangler in production: the container
// image (../Dockerfile), Kubernetes manifests, Grafana dashboards and
// Prometheus alert rules. Its tests check that they name what the programs
// accept and export.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/statuspage"
)

// metricDecl finds metric declarations in the programs' Go source:
// Namespace/Subsystem/Name in client_golang's Opts, and NewDesc names.
var (
	metricOpts  = regexp.MustCompile(`Namespace:\s*"(\w+)",\s*(?:Subsystem:\s*"(\w+)",\s*)?Name:\s*"(\w+)"`)
	metricDesc  = regexp.MustCompile(`(?:NewDesc\(\s*|Name:\s*)"((?:strangler|datasync)_\w+)"`)
	metricUse   = regexp.MustCompile(`\b(?:strangler|datasync)_[a-z0-9_]+\b`)
	quoted      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	histogramOf = regexp.MustCompile(`_(bucket|sum|count)$`)
)

// exported returns the metric names the programs declare, from the Go
// source under internal/ and cmd/ (tests left out).
func exported(tb testing.TB) map[string]bool {
	tb.Helper()
	names := map[string]bool{}
	for _, dir := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricOpts.FindAllStringSubmatch(string(src), -1) {
				parts := []string{m[1]}
				if m[2] != "" {
					parts = append(parts, m[2])
				}
				names[strings.Join(append(parts, m[3]), "_")] = true
			}
			for _, m := range metricDesc.FindAllStringSubmatch(string(src), -1) {
				names[m[1]] = true
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	// Names built at run time (one set of sync metrics per direction) are
	// taken from the collectors themselves.
	for _, n := range described(func(r prometheus.Registerer) { apply.NewMetrics(r) }) {
		names[n] = true
	}
	return names
}

// describer is a prometheus.Registerer that keeps the names of what is
// registered with it.
type describer struct{ names []string }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return false }

// described returns the metric names that register registers.
func described(register func(prometheus.Registerer)) []string {
	d := &describer{}
	register(d)
	return d.names
}

// used returns the strangler_ and datasync_ metric names in a PromQL
// expression, label values left out.
func used(expr string) []string {
	return metricUse.FindAllString(quoted.ReplaceAllString(expr, `""`), -1)
}

// ruleExprs returns the expression of every rule in a rules file.
func ruleExprs(tb testing.TB, path string) map[string]string {
	tb.Helper()
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(tb, path, &file)
	out := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	if len(out) == 0 {
		tb.Fatalf("%s has no rules", path)
	}
	return out
}

// dashboardExprs returns every panel target's expression of a dashboard.
func dashboardExprs(tb testing.TB, path string) map[string]string {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, t := range p.Targets {
			out[d.Title+" / "+p.Title+" #"+string(rune('A'+i))] = t.Expr
		}
	}
	if len(out) == 0 {
		tb.Fatalf("%s has no panel queries", path)
	}
	return out
}

func readYAML(tb testing.TB, path string, v any) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

// TestMetricsInUseAreExported checks that every metric the dashboards, the
// alert rules and the status page read is one the programs declare: a
// metric renamed in the code and not in them fails here.
func TestMetricsInUseAreExported(t *testing.T) {
	have := exported(t)
	for _, want := range []string{"strangler_requests_total", "strangler_breaker_state", "datasync_sync_lag_seconds", "datasync_verify_consistent"} {
		if !have[want] {
			t.Fatalf("the scan of the source found no %s: it is broken (found %v)", want, have)
		}
	}
	exprs := ruleExprs(t, "prometheus/alerts.yaml")
	for _, name := range []string{"strangler-proxy.json", "datasync.json"} {
		for k, v := range dashboardExprs(t, filepath.Join("grafana", name)) {
			exprs["dashboard "+k] = v
		}
	}
	for _, m := range statuspage.MetricsUsed() {
		exprs["status page "+m] = m
	}
	for where, expr := range exprs {
		names := used(expr)
		if len(names) == 0 && !strings.Contains(expr, "up{") {
			t.Errorf("%s: %q reads none of the programs' metrics", where, expr)
		}
		for _, n := range names {
			if !have[n] && !have[histogramOf.ReplaceAllString(n, "")] {
				t.Errorf("%s uses %s, which no program exports", where, n)
			}
		}
	}
}

// TestAlertRules runs promtool on the rules: the syntax check and the unit
// tests in alerts_test.yaml.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed and could not be (scripts/ensure-ops-tools.sh installs Debian's prometheus package): the rules check is skipped")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Template    podTemplate `yaml:"template"`
		JobTemplate struct {
			Spec struct {
				Template podTemplate `yaml:"template"`
			} `yaml:"spec"`
		} `yaml:"jobTemplate"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type podTemplate struct {
	Spec struct {
		SecurityContext struct {
			RunAsNonRoot bool `yaml:"runAsNonRoot"`
		} `yaml:"securityContext"`
		InitContainers []container `yaml:"initContainers"`
		Containers     []container `yaml:"containers"`
	} `yaml:"spec"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
}

type probe struct {
	HTTPGet struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

func manifests(tb testing.TB) []k8sObject {
	tb.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no manifests in kubernetes/: %v", err)
	}
	var out []k8sObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				tb.Fatalf("%s: an object without kind or name", f)
			}
			out = append(out, o)
		}
	}
	return out
}

// image is the image the Dockerfile builds, as the manifests name it.
const image = "strangler:dev"

// buildPrograms builds both programs for the checks of their flags.
func buildPrograms(tb testing.TB) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/strangler-proxy", "./cmd/datasync")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return map[string]string{
		"/usr/local/bin/strangler-proxy": filepath.Join(dir, "strangler-proxy"),
		"/usr/local/bin/datasync":        filepath.Join(dir, "datasync"),
	}
}

var longFlag = regexp.MustCompile(`^--([a-z0-9-]+)`)

// TestManifests checks the Kubernetes manifests against the programs: every
// container of the image runs a binary the Dockerfile installs, with a
// subcommand and flags that binary accepts; the probes and ports name the
// listeners of the config in the ConfigMap; that config passes
// `strangler-proxy validate`; datasync's config parses.
func TestManifests(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the programs")
	}
	objs := manifests(t)
	bins := buildPrograms(t)
	byKind := map[string]map[string]k8sObject{}
	for _, o := range objs {
		if byKind[o.Kind] == nil {
			byKind[o.Kind] = map[string]k8sObject{}
		}
		byKind[o.Kind][o.Metadata.Name] = o
	}
	for _, want := range [][2]string{
		{"Deployment", "strangler-proxy"}, {"PodDisruptionBudget", "strangler-proxy"}, {"ConfigMap", "strangler-proxy"},
		{"Secret", "strangler-admin"}, {"Deployment", "datasync-sync"}, {"CronJob", "datasync-verify"},
	} {
		if _, ok := byKind[want[0]][want[1]]; !ok {
			t.Errorf("no %s %s in deploy/kubernetes", want[0], want[1])
		}
	}

	helps := map[string]string{}
	help := func(bin, sub string) string {
		key := bin + " " + sub
		if h, ok := helps[key]; ok {
			return h
		}
		out, err := exec.Command(bins[bin], sub, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s --help: %v\n%s", bin, sub, err, out)
		}
		helps[key] = string(out)
		return helps[key]
	}
	for _, o := range objs {
		pod := o.Spec.Template
		if o.Kind == "CronJob" {
			pod = o.Spec.JobTemplate.Spec.Template
		}
		if o.Kind != "Deployment" && o.Kind != "CronJob" {
			continue
		}
		if !pod.Spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s %s: the pod must run as non-root (securityContext.runAsNonRoot)", o.Kind, o.Metadata.Name)
		}
		for _, c := range pod.Spec.Containers {
			where := o.Kind + " " + o.Metadata.Name + " container " + c.Name
			if c.Image != image {
				t.Errorf("%s: image %q, want %q (the Dockerfile's)", where, c.Image, image)
				continue
			}
			if len(c.Command) != 1 || bins[c.Command[0]] == "" {
				t.Errorf("%s: command %q is not a program the image installs", where, c.Command)
				continue
			}
			if len(c.Args) == 0 {
				t.Errorf("%s: no subcommand in args", where)
				continue
			}
			h := help(c.Command[0], c.Args[0])
			for _, a := range c.Args[1:] {
				if m := longFlag.FindStringSubmatch(a); m != nil && !strings.Contains(h, "--"+m[1]+" ") && !strings.Contains(h, "--"+m[1]+"\n") {
					t.Errorf("%s: %s %s does not accept %s", where, filepath.Base(c.Command[0]), c.Args[0], a)
				}
			}
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, pr := range []*probe{c.ReadinessProbe, c.LivenessProbe} {
				if pr == nil {
					continue
				}
				if _, ok := ports[pr.HTTPGet.Port.Value]; !ok {
					t.Errorf("%s: probe port %q names no container port", where, pr.HTTPGet.Port.Value)
				}
			}
			if o.Metadata.Name == "datasync-sync" {
				addr := argAfter(c.Args, "--metrics-addr")
				if _, port, _ := net.SplitHostPort(addr); port != "9187" || ports["metrics"] != 9187 {
					t.Errorf("%s: --metrics-addr %q and the metrics port %d must agree on 9187", where, addr, ports["metrics"])
				}
			}
		}
	}

	// The proxy: probes on the admin listener of the config it runs.
	proxy := byKind["Deployment"]["strangler-proxy"]
	if len(proxy.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployment strangler-proxy: want one container")
	}
	c := proxy.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("strangler-proxy: want readiness on /readyz and liveness on /healthz")
	}
	cm := byKind["ConfigMap"]["strangler-proxy"]
	var cfg struct {
		Listen string `yaml:"listen"`
		Admin  struct {
			Listen   string `yaml:"listen"`
			TokenEnv string `yaml:"token_env"`
		} `yaml:"admin"`
		FlagsFile string `yaml:"flags_file"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["strangler.yaml"]), &cfg); err != nil {
		t.Fatalf("ConfigMap strangler-proxy strangler.yaml: %v", err)
	}
	for name, addr := range map[string]string{"http": cfg.Listen, "admin": cfg.Admin.Listen} {
		_, port, _ := net.SplitHostPort(addr)
		if got := c.Ports; portOf(got, name) == 0 || port != strconv.Itoa(portOf(got, name)) {
			t.Errorf("strangler-proxy: container port %s (%d) and the config's listener %q disagree", name, portOf(got, name), addr)
		}
	}
	if !strings.Contains(cm.Data["strangler.yaml"], "flags_store:") {
		t.Errorf("the ConfigMap's strangler.yaml runs without flags_store: several replicas need fleet mode")
	}
	dir := t.TempDir()
	config := strings.Replace(cm.Data["strangler.yaml"], cfg.FlagsFile, filepath.Join(dir, "flags.yaml"), 1)
	for name, text := range map[string]string{"strangler.yaml": config, "flags.yaml": cm.Data["flags.yaml"]} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	validate := exec.Command(bins["/usr/local/bin/strangler-proxy"], "validate", "--config", filepath.Join(dir, "strangler.yaml"))
	validate.Env = append(os.Environ(), cfg.Admin.TokenEnv+"=x", "STRANGLER_FLAGS_DATABASE_URL=postgres://strangler@127.0.0.1:1/strangler")
	if out, err := validate.CombinedOutput(); err != nil {
		t.Errorf("the ConfigMap's strangler.yaml does not validate: %v\n%s", err, out)
	}

	ds := byKind["ConfigMap"]["datasync"]
	env := map[string]string{"DATASYNC_SOURCE": "postgres://a@b/c", "DATASYNC_TARGET": "postgres://a@b/d"}
	if _, err := mapping.Parse(strings.NewReader(ds.Data["datasync.yaml"]), func(k string) string { return env[k] }); err != nil {
		t.Errorf("the ConfigMap's datasync.yaml: %v", err)
	}
	if sync := byKind["Deployment"]["datasync-sync"]; sync.Spec.Replicas == nil || *sync.Spec.Replicas != 1 || sync.Spec.Strategy.Type != "Recreate" {
		t.Errorf("Deployment datasync-sync: want replicas 1 and strategy Recreate (one sync per name)")
	}
}

func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func portOf(ports []struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}, name string) int {
	for _, p := range ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// TestDockerfile checks the image's recipe: a build stage and a run stage,
// both programs built and copied, a non-root user.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var stages []string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") {
			stages = append(stages, line)
		}
	}
	if len(stages) < 2 {
		t.Errorf("want a multi-stage build, got stages %q", stages)
	}
	final := text[strings.LastIndex(text, stages[len(stages)-1]):]
	for _, prog := range []string{"strangler-proxy", "datasync"} {
		if !strings.Contains(text, "./cmd/"+prog) {
			t.Errorf("the Dockerfile does not build ./cmd/%s", prog)
		}
		if _, err := os.Stat("../cmd/" + prog); err != nil {
			t.Errorf("the Dockerfile builds ./cmd/%s, which does not exist", prog)
		}
		if !regexp.MustCompile(`COPY --from=\w+ \S+ /usr/local/bin/` + prog + `\b`).MatchString(final) {
			t.Errorf("the run stage does not install /usr/local/bin/%s", prog)
		}
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(final)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("the run stage must set a non-root USER, got %v", user)
	}
}
