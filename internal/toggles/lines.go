package toggles

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// addLines fills in each problem's Line from the YAML it was found in,
// where the path leads to a node of the document.
func addLines(data []byte, ps []Problem) {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return
	}
	for i := range ps {
		if n := nodeAt(doc.Content[0], ps[i].Path); n != nil {
			ps[i].Line = n.Line
		}
	}
}

// nodeAt follows a field path (flags.users-migration.segments[1]) into a
// YAML node, or returns nil. Mapping keys may themselves hold dots, so a
// key is matched against the path's text rather than split out of it.
func nodeAt(n *yaml.Node, path string) *yaml.Node {
	for path != "" {
		switch {
		case strings.HasPrefix(path, "["):
			end := strings.IndexByte(path, ']')
			i, err := strconv.Atoi(path[1:max(end, 1)])
			if end < 0 || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return nil
			}
			n, path = n.Content[i], path[end+1:]
		case n.Kind == yaml.MappingNode:
			path = strings.TrimPrefix(path, ".")
			var next *yaml.Node
			rest := ""
			for j := 0; j+1 < len(n.Content); j += 2 {
				k := n.Content[j].Value
				after, ok := strings.CutPrefix(path, k)
				if ok && (after == "" || after[0] == '.' || after[0] == '[') && (next == nil || len(after) < len(rest)) {
					next, rest = n.Content[j+1], after
				}
			}
			if next == nil {
				return n
			}
			n, path = next, rest
		default:
			return n
		}
	}
	return n
}
