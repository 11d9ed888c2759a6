package mapping

import (
	"fmt"
	"strings"
)

// Ident is a schema-qualified table name.
type Ident struct {
	Schema string
	Name   string
}

// ParseIdent parses "table", "schema.table" or quoted forms such as
// `"My Schema"."Users"`. Unquoted names are folded to lower case, as
// PostgreSQL does; the schema defaults to public.
func ParseIdent(s string) (Ident, error) {
	parts, err := splitQualified(strings.TrimSpace(s))
	if err != nil {
		return Ident{}, fmt.Errorf("table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return Ident{Schema: "public", Name: parts[0]}, nil
	case 2:
		return Ident{Schema: parts[0], Name: parts[1]}, nil
	default:
		return Ident{}, fmt.Errorf("table name %q: want TABLE or SCHEMA.TABLE", s)
	}
}

func splitQualified(s string) ([]string, error) {
	var parts []string
	for {
		if s == "" {
			return nil, fmt.Errorf("empty name")
		}
		var part string
		if s[0] == '"' {
			var b strings.Builder
			i := 1
			for ; ; i++ {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated quote")
				}
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					break
				}
				b.WriteByte(s[i])
			}
			part, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, '.')
			if end < 0 {
				end = len(s)
			}
			part, s = strings.ToLower(s[:end]), s[end:]
			if part == "" {
				return nil, fmt.Errorf("empty name")
			}
		}
		if part == "" {
			return nil, fmt.Errorf("empty name")
		}
		parts = append(parts, part)
		if s == "" {
			return parts, nil
		}
		if s[0] != '.' {
			return nil, fmt.Errorf("unexpected %q", s)
		}
		s = s[1:]
	}
}

// String is the qualified name as people write it: schema.table.
func (i Ident) String() string { return i.Schema + "." + i.Name }

// Quoted is the name quoted for SQL: "schema"."table".
func (i Ident) Quoted() string { return QuoteIdent(i.Schema) + "." + QuoteIdent(i.Name) }

// QuoteIdent quotes one SQL identifier.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// QuoteLiteral quotes a SQL string literal.
func QuoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// CastType is a type as format_type prints it, without its modifier, for a
// cast in SQL: an explicit cast to varchar(10) or char(3) would cut a longer
// value short in silence, where cast to the unbounded type the value meets
// the column's limit on assignment, which fails instead. char and bit
// without a modifier mean a length of 1, so their unbounded forms are
// bpchar and varbit.
func CastType(t string) string {
	var b strings.Builder
	depth := 0
	for _, r := range t {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	base, array := strings.CutSuffix(strings.TrimSpace(b.String()), "[]")
	switch base {
	case "character":
		base = "bpchar"
	case "bit":
		base = "varbit"
	}
	if array {
		base += "[]"
	}
	return base
}
