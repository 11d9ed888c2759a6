package toggles

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// FlagdSchema is the schema URL written into exported flagd files.
const FlagdSchema = "https://flagd.dev/schema/v0/flags.json"

// flagdFile is flagd's flag-definition file.
type flagdFile struct {
	Schema string               `json:"$schema"`
	Flags  map[string]flagdFlag `json:"flags"`
}

type flagdFlag struct {
	State          string          `json:"state"`
	Variants       map[string]bool `json:"variants"`
	DefaultVariant string          `json:"defaultVariant"`
	Targeting      any             `json:"targeting,omitempty"`
}

// ExportFlagd writes f as a flagd flag-definition file (JSON) that sends
// every user where this package does, so a team can move the same cohorts
// to flagd: boolean flags with the variants "service" (true) and
// "monolith" (false); exclude_users and include_users as "in" rules over
// the targeting key; each segment as a rule over the evaluation context
// (a claim as the attribute of the same name, a header as
// headers.<Header-Name>) leading to its fractional split; and the
// percentage as a fractional split over flagKey+targetingKey with weights
// round(percentage*100) and the rest of 10,000, the service's variant
// first. A disabled flag answers "monolith" to everyone.
func ExportFlagd(f *File) ([]byte, error) {
	out := flagdFile{Schema: FlagdSchema, Flags: make(map[string]flagdFlag, len(f.Flags))}
	for _, key := range slices.Sorted(maps.Keys(f.Flags)) {
		fl := f.Flags[key]
		ff := flagdFlag{
			State:          "ENABLED",
			Variants:       map[string]bool{VariantService: true, VariantMonolith: false},
			DefaultVariant: VariantMonolith,
		}
		if fl.IsEnabled() {
			ff.Targeting = flagdTargeting(fl, f.Segments)
		}
		out.Flags[key] = ff
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("export flagd: %w", err)
	}
	return append(data, '\n'), nil
}

func flagdTargeting(fl Flag, segments map[string]Segment) any {
	targetingKey := map[string]any{"var": "targetingKey"}
	var branches []any // condition, result, condition, result, ..., else
	if len(fl.ExcludeUsers) > 0 {
		branches = append(branches, map[string]any{"in": []any{targetingKey, fl.ExcludeUsers}}, VariantMonolith)
	}
	if len(fl.IncludeUsers) > 0 {
		branches = append(branches, map[string]any{"in": []any{targetingKey, fl.IncludeUsers}}, VariantService)
	}
	if len(fl.Segments) == 0 {
		branches = append(branches, flagdFractional(fl.Percentage))
	} else {
		for _, name := range fl.Segments {
			pct := fl.Percentage
			if p, ok := fl.SegmentPercentages[name]; ok {
				pct = p
			}
			branches = append(branches, flagdSegmentRule(segments[name]), flagdFractional(pct))
		}
		branches = append(branches, VariantMonolith)
	}
	if len(branches) == 1 {
		return branches[0]
	}
	return map[string]any{"if": branches}
}

func flagdFractional(pct float64) any {
	in := Threshold(pct)
	return map[string]any{"fractional": []any{
		map[string]any{"cat": []any{map[string]any{"var": "$flagd.flagKey"}, map[string]any{"var": "targetingKey"}}},
		[]any{VariantService, in},
		[]any{VariantMonolith, BucketCount - in},
	}}
}

// flagdSegmentRule writes a segment as JSONLogic over the evaluation
// context.
func flagdSegmentRule(s Segment) any {
	attr := map[string]any{"var": s.Claim}
	if s.Header != "" {
		attr = map[string]any{"var": "headers." + strings.ReplaceAll(headerName(s.Header), ".", "_")}
	}
	switch {
	case s.Equals != nil:
		v := string(*s.Equals)
		if v == "true" || v == "false" {
			// A boolean claim may arrive as true or as "true".
			return map[string]any{"in": []any{attr, []any{v, v == "true"}}}
		}
		return map[string]any{"==": []any{attr, v}}
	case s.Prefix != "":
		return map[string]any{"starts_with": []any{attr, s.Prefix}}
	case s.Suffix != "":
		return map[string]any{"ends_with": []any{attr, s.Suffix}}
	default:
		return map[string]any{"in": []any{attr, s.In}}
	}
}
