package problem

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Located is a problem found in a YAML file, with the line it is on.
type Located struct {
	Problem
	// Line is the file's line, 0 when unknown.
	Line int
}

// String formats l as "line N: path: message", or as l.Problem without a
// line.
func (l Located) String() string {
	if l.Line > 0 {
		return fmt.Sprintf("line %d: %s", l.Line, l.Problem)
	}
	return l.Problem.String()
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// CheckYAML checks node against the Go type t that it is to be decoded
// into, without stopping at the first problem as yaml.v3 does: every
// mapping key must name a field (by its yaml tag), every leaf must decode
// into its field. It returns the problems in document order, each at its
// field path (services.users.timeout, routes[0].methods[1]), and records
// the line of every field path in lines unless lines is nil.
func CheckYAML(node *yaml.Node, t reflect.Type, lines map[string]int) []Located {
	if node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = node.Content[0]
	}
	var probs []Located
	walk(node, t, "", lines, &probs)
	return probs
}

func walk(node *yaml.Node, t reflect.Type, path string, lines map[string]int, probs *[]Located) {
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
	add := func(path string, line int, msg string) {
		*probs = append(*probs, Located{Problem: Problem{Path: path, Message: msg}, Line: line})
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			add(orRoot(path), node.Line, "want a mapping of keys to values")
			return
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			p := join(path, k.Value)
			if !ok {
				add(p, k.Line, "unknown key; known keys here: "+strings.Join(tagNames(t), ", "))
				continue
			}
			record(lines, p, k.Line)
			walk(v, f.Type, p, lines, probs)
		}
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			add(orRoot(path), node.Line, "want a mapping of names to entries")
			return
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			p := join(path, k.Value)
			record(lines, p, k.Line)
			walk(v, t.Elem(), p, lines, probs)
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			add(orRoot(path), node.Line, "want a list")
			return
		}
		for i, v := range node.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			record(lines, p, v.Line)
			walk(v, t.Elem(), p, lines, probs)
		}
	default:
		checkLeaf(node, t, path, probs)
	}
}

func record(lines map[string]int, path string, line int) {
	if lines != nil {
		lines[path] = line
	}
}

// checkLeaf decodes node into a fresh value of type t to find type errors
// with their exact path.
func checkLeaf(node *yaml.Node, t reflect.Type, path string, probs *[]Located) {
	if err := node.Decode(reflect.New(t).Interface()); err != nil {
		p := FromYAMLError(path, err)
		if p.Line == 0 {
			p.Line = node.Line
		}
		*probs = append(*probs, p)
	}
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// FromYAMLError turns a yaml.v3 error into a problem at path, taking the
// line out of the message.
func FromYAMLError(path string, err error) Located {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	p := Located{Problem: Problem{Path: path}}
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
