package mapping

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrConfig is wrapped by every error about a config file or the flags that
// stand for one.
var ErrConfig = errors.New("invalid datasync configuration")

// Config is the datasync configuration: where the data comes from, where it
// goes, and which tables move.
type Config struct {
	// Source is the monolith's database URL.
	Source string `yaml:"source"`
	// Target is the service's database URL.
	Target string `yaml:"target"`
	// Tables lists the tables to move.
	Tables []TableSpec `yaml:"tables"`
	// TwoWay says both databases take writes (the coexistence phase):
	// sync applies each side's changes to the other and verify
	// classifies differences by the side that wrote last.
	TwoWay bool `yaml:"two_way"`
	// Conflicts is two-way sync's conflict policy: last_update_wins (the
	// default when empty), source_wins or target_wins (sync --conflicts).
	Conflicts string `yaml:"conflicts"`
}

// TableSpec is one table of the config, as the user wrote it.
type TableSpec struct {
	// Source is the source table, optionally schema-qualified.
	Source string `yaml:"source"`
	// Target is the target table; empty means the same name as Source.
	Target string `yaml:"target"`
	// Key lists source column names; empty means the source primary key.
	Key []string `yaml:"key"`
	// Columns maps target column → source column; empty means the columns
	// both tables have.
	Columns map[string]string `yaml:"columns"`
	// Where is an optional SQL filter over the source rows.
	Where string `yaml:"where"`
	// AcceptPartitionLimits lets sync stream a partitioned source table
	// despite what logical replication does not carry for one: TRUNCATE of
	// a single partition, DETACH PARTITION and ATTACH PARTITION of a
	// partition holding rows (docs/datasync.md, Limits). Without it, sync's
	// preflight refuses such a table.
	AcceptPartitionLimits bool `yaml:"accept_partition_limits"`
}

// Problem is one thing wrong with a config, at a field path.
type Problem struct {
	Path string // e.g. tables[1].source
	Line int    // 0 when unknown
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Msg)
	}
	return p.Path + ": " + p.Msg
}

// ConfigError lists every problem found in a config.
type ConfigError struct {
	File     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		fmt.Fprintf(&b, "%s: ", e.File)
	}
	if len(e.Problems) == 1 {
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "%d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return ErrConfig }

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// ExpandEnv replaces ${VAR} references with getenv(VAR). A reference to a
// variable that is unset or empty is an error naming it, since an empty URL
// would otherwise connect somewhere unintended.
func ExpandEnv(s string, getenv func(string) string) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v := getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set", strings.Join(missing, ", "))
	}
	return out, nil
}

// Parse decodes a config file strictly: unknown keys are errors with their
// line. Environment references in source and target are expanded.
func Parse(r io.Reader, getenv func(string) string) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, &ConfigError{Problems: yamlProblems(err)}
	}
	var problems []Problem
	for _, f := range []struct {
		path string
		v    *string
	}{{"source", &cfg.Source}, {"target", &cfg.Target}} {
		v, err := ExpandEnv(*f.v, getenv)
		if err != nil {
			problems = append(problems, Problem{Path: f.path, Msg: err.Error() + ": set it or write the URL here"})
			continue
		}
		*f.v = v
	}
	problems = append(problems, cfg.validate()...)
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

// LoadFile reads and parses the config file at path.
func LoadFile(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f, getenv)
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.File = path
	}
	return cfg, err
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

func yamlProblems(err error) []Problem {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []Problem{{Path: "(file)", Msg: err.Error()}}
	}
	var out []Problem
	for _, e := range te.Errors {
		p := Problem{Path: "(file)", Msg: e}
		if m := yamlLine.FindStringSubmatch(e); m != nil {
			fmt.Sscan(m[1], &p.Line)
			p.Msg = m[2]
		}
		out = append(out, p)
	}
	return out
}

func (c *Config) validate() []Problem {
	var problems []Problem
	switch c.Conflicts {
	case "", "last_update_wins", "source_wins", "target_wins":
	default:
		problems = append(problems, Problem{Path: "conflicts", Msg: fmt.Sprintf("%q is not a conflict policy: use last_update_wins, source_wins or target_wins", c.Conflicts)})
	}
	seen := map[string]int{}
	for i, t := range c.Tables {
		path := fmt.Sprintf("tables[%d]", i)
		if strings.TrimSpace(t.Source) == "" {
			problems = append(problems, Problem{Path: path + ".source", Msg: "is required: name the source table, e.g. public.users"})
			continue
		}
		if _, err := ParseIdent(t.Source); err != nil {
			problems = append(problems, Problem{Path: path + ".source", Msg: err.Error()})
		}
		if t.Target != "" {
			if _, err := ParseIdent(t.Target); err != nil {
				problems = append(problems, Problem{Path: path + ".target", Msg: err.Error()})
			}
		}
		dst := t.TargetName()
		if id, err := ParseIdent(dst); err == nil {
			dst = id.String()
		}
		if j, ok := seen[dst]; ok {
			problems = append(problems, Problem{Path: path + ".target", Msg: fmt.Sprintf("%s is already the target of tables[%d]", dst, j)})
		}
		seen[dst] = i
		for k, col := range t.Key {
			if strings.TrimSpace(col) == "" {
				problems = append(problems, Problem{Path: fmt.Sprintf("%s.key[%d]", path, k), Msg: "is empty"})
			}
		}
		for dstCol, srcCol := range t.Columns {
			if strings.TrimSpace(dstCol) == "" || strings.TrimSpace(srcCol) == "" {
				problems = append(problems, Problem{Path: path + ".columns", Msg: fmt.Sprintf("%q: %q: both the target and the source column must be named", dstCol, srcCol)})
			}
		}
	}
	return problems
}

// TargetName is the target table of the spec, defaulting to the source's name.
func (t TableSpec) TargetName() string {
	if t.Target != "" {
		return t.Target
	}
	return t.Source
}

// ParseTableFlag turns a --table value, "src" or "src:dst", into a spec.
func ParseTableFlag(v string) (TableSpec, error) {
	src, dst, _ := strings.Cut(v, ":")
	spec := TableSpec{Source: strings.TrimSpace(src), Target: strings.TrimSpace(dst)}
	if spec.Source == "" {
		return spec, fmt.Errorf("--table %q: name a source table, as TABLE or SOURCE:TARGET", v)
	}
	if _, err := ParseIdent(spec.Source); err != nil {
		return spec, fmt.Errorf("--table %q: %w", v, err)
	}
	if spec.Target != "" {
		if _, err := ParseIdent(spec.Target); err != nil {
			return spec, fmt.Errorf("--table %q: %w", v, err)
		}
	}
	return spec, nil
}
