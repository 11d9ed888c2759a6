package proxyconfig

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as a Go duration string ("2s", "500ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError("want a duration such as 2s or 500ms")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeError(fmt.Sprintf("invalid duration %q: want a number with a unit, such as 2s or 500ms", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// typeError lets yaml.v3 go on decoding the rest of the file after a bad
// value, the way it does for its own type errors.
func typeError(msg string) error { return &yaml.TypeError{Errors: []string{msg}} }

// Size is a number of bytes, written as an integer or with a unit: 512KiB,
// 1MiB, 1GiB (also KB, MB, GB as powers of 1000).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize parses a byte count such as "1MiB" or "4096".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want bytes such as 65536, 512KiB or 1MiB", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML parses a byte count.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError("want a size such as 65536, 512KiB or 1MiB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeError(err.Error())
	}
	*s = v
	return nil
}

// Decode reads YAML from r on top of c. Unknown keys and values of the wrong
// type are reported all at once, with field path and line, as a
// *ValidationError; a file that is not YAML at all gives a plain error.
func (c *Config) Decode(r io.Reader) error {
	var root yaml.Node
	if err := yaml.NewDecoder(r).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &ValidationError{Problems: []Problem{{Path: "(file)", Message: "empty configuration: at least monolith.url is needed"}}}
		}
		return &ValidationError{Problems: []Problem{yamlProblem("(file)", err)}}
	}
	if c.lines == nil {
		c.lines = make(map[string]int)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var probs []Problem
	walk(doc, reflect.TypeOf(c).Elem(), "", c.lines, &probs)
	// Decode even when walk found problems: yaml.v3 fills in what it can, so
	// that Validate does not report keys the file does set.
	err := doc.Decode(c)
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
		return &ValidationError{Problems: probs}
	}
	if err != nil {
		// walk checks every leaf, so this is a case it does not know about.
		return &ValidationError{Problems: []Problem{yamlProblem("(file)", err)}}
	}
	return nil
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// walk checks node against the Go type t: every mapping key must name a
// field, every leaf must decode into its field. It records the line of every
// field path in lines.
func walk(node *yaml.Node, t reflect.Type, path string, lines map[string]int, probs *[]Problem) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if node.Kind == yaml.AliasNode && node.Alias != nil {
		node = node.Alias
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		checkLeaf(node, t, path, probs)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			*probs = append(*probs, Problem{Path: orRoot(path), Line: node.Line, Message: "want a mapping of keys to values"})
			return
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			p := join(path, k.Value)
			if !ok {
				*probs = append(*probs, Problem{Path: p, Line: k.Line, Message: "unknown key; known keys here: " + strings.Join(tagNames(t), ", ")})
				continue
			}
			lines[p] = k.Line
			walk(v, f.Type, p, lines, probs)
		}
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			*probs = append(*probs, Problem{Path: orRoot(path), Line: node.Line, Message: "want a mapping of names to entries"})
			return
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			p := join(path, k.Value)
			lines[p] = k.Line
			walk(v, t.Elem(), p, lines, probs)
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			*probs = append(*probs, Problem{Path: orRoot(path), Line: node.Line, Message: "want a list"})
			return
		}
		for i, v := range node.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = v.Line
			walk(v, t.Elem(), p, lines, probs)
		}
	default:
		checkLeaf(node, t, path, probs)
	}
}

// checkLeaf decodes node into a fresh value of type t to find type errors
// with their exact path.
func checkLeaf(node *yaml.Node, t reflect.Type, path string, probs *[]Problem) {
	if err := node.Decode(reflect.New(t).Interface()); err != nil {
		*probs = append(*probs, yamlProblem(path, err))
		if p := &(*probs)[len(*probs)-1]; p.Line == 0 {
			p.Line = node.Line
		}
	}
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlProblem turns a yaml error into a Problem, taking the line out of the
// message.
func yamlProblem(path string, err error) Problem {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	p := Problem{Path: path}
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		p.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
	}
	p.Message = msg
	return p
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.IsExported() && tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			names = append(names, tagName(f))
		}
	}
	return names
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func join(path, key string) string {
	if key == "" {
		key = `""`
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}
