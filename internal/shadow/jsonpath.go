package shadow

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A JSON path names a node of a JSON document: $ is the root, .key or
// ["key"] an object member, [n] an array element, and [*] (or .*) any
// element or member. Examples: $.updated_at, $.items[*].updated_at,
// $["odd key"][0].

// segKind tells a path segment's kind.
type segKind uint8

const (
	segKey segKind = iota
	segIndex
	segAny
)

// seg is one step of a path: an object key, an array index, or (in patterns
// only) any of either.
type seg struct {
	kind  segKind
	key   string
	index int
}

// pattern is a parsed JSON path; it matches a node's path of the same length
// whose steps it matches one by one.
type pattern []seg

var errPath = errors.New("invalid JSON path")

// parsePattern parses a JSON path.
func parsePattern(s string) (pattern, error) {
	if !strings.HasPrefix(s, "$") {
		return nil, fmt.Errorf("%w %q: must start with $", errPath, s)
	}
	var p pattern
	for i := 1; i < len(s); {
		switch {
		case s[i] == '.':
			j := i + 1
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				j++
			}
			switch key := s[i+1 : j]; key {
			case "":
				return nil, fmt.Errorf("%w %q: empty key at offset %d", errPath, s, i)
			case "*":
				p = append(p, seg{kind: segAny})
			default:
				if !utf8.ValidString(key) {
					return nil, fmt.Errorf("%w %q: key at offset %d is not UTF-8", errPath, s, i)
				}
				p = append(p, seg{kind: segKey, key: key})
			}
			i = j
		case strings.HasPrefix(s[i:], `["`):
			end := closingQuote(s, i+2)
			if end < 0 || end+1 >= len(s) || s[end+1] != ']' {
				return nil, fmt.Errorf("%w %q: unterminated [\"...\"] at offset %d", errPath, s, i)
			}
			var key string
			if err := json.Unmarshal([]byte(s[i+1:end+1]), &key); err != nil {
				return nil, fmt.Errorf("%w %q: key at offset %d: %w", errPath, s, i, err)
			}
			p = append(p, seg{kind: segKey, key: key})
			i = end + 2
		case s[i] == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("%w %q: unterminated [ at offset %d", errPath, s, i)
			}
			inner := s[i+1 : i+j]
			if inner == "*" {
				p = append(p, seg{kind: segAny})
			} else {
				n, err := strconv.Atoi(inner)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("%w %q: [%s] is not an index, * or a quoted key", errPath, s, inner)
				}
				p = append(p, seg{kind: segIndex, index: n})
			}
			i += j + 1
		default:
			return nil, fmt.Errorf("%w %q: unexpected %q at offset %d", errPath, s, s[i], i)
		}
	}
	return p, nil
}

// closingQuote returns the offset of the double quote that ends the JSON
// string whose content starts at from, or -1.
func closingQuote(s string, from int) int {
	for i := from; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// matches reports whether p names the node at path.
func (p pattern) matches(path []seg) bool {
	if len(p) != len(path) {
		return false
	}
	for i, ps := range p {
		switch ps.kind {
		case segAny:
		case segKey:
			if path[i].kind != segKey || path[i].key != ps.key {
				return false
			}
		case segIndex:
			if path[i].kind != segIndex || path[i].index != ps.index {
				return false
			}
		}
	}
	return true
}

// formatPath renders a node's path; with anyIndex, every array index is
// written [*], which is how noisy paths are learned.
func formatPath(path []seg, anyIndex bool) string {
	var b strings.Builder
	b.WriteByte('$')
	for _, s := range path {
		switch {
		case s.kind == segAny || (s.kind == segIndex && anyIndex):
			b.WriteString("[*]")
		case s.kind == segIndex:
			fmt.Fprintf(&b, "[%d]", s.index)
		case plainKey(s.key):
			b.WriteByte('.')
			b.WriteString(s.key)
		default:
			q, _ := json.Marshal(s.key)
			b.WriteByte('[')
			b.Write(q)
			b.WriteByte(']')
		}
	}
	return b.String()
}

// plainKey reports whether key can be written .key and read back.
func plainKey(key string) bool {
	if key == "" || key == "*" {
		return false
	}
	for _, r := range key {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
