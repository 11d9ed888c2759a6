// Package problem holds the field-path problems that config validation
// reports: one Problem per thing wrong, at the path of the field that holds
// it (for example "flags.users-migration.guard.window").
package problem

import "fmt"

// Problem is one thing wrong with a config value.
type Problem struct {
	// Path is the field's path, e.g. routes[0].shadow.percentage.
	Path string `json:"path"`
	// Message says what is wrong and, where it helps, what to write instead.
	Message string `json:"message"`
}

// String formats p as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// List collects problems.
type List []Problem

// Add appends a problem at path with a formatted message.
func (l *List) Add(path, format string, args ...any) {
	*l = append(*l, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// Join returns parent.field, or field alone when parent is empty.
func Join(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}

// Paths returns the paths of ps, in order.
func Paths(ps []Problem) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Path)
	}
	return out
}
