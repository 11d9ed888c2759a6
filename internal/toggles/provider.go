package toggles

import (
	"context"

	"github.com/open-feature/go-sdk/openfeature"
)

// Evaluation context attributes the provider reads, besides the targeting
// key (the user id).
const (
	// AttrSegments holds the names of the segments the user belongs to, as
	// []string (or []any of strings). Only a flag with segments reads it.
	AttrSegments = "segments"
)

// Variants the provider answers with; flags exported for flagd use the
// same names, the service's first.
const (
	VariantService  = "service"
	VariantMonolith = "monolith"
)

// MetadataRule is the flag metadata key holding the Rule that decided.
const MetadataRule = "rule"

// ProviderName is the provider's name in OpenFeature metadata.
const ProviderName = "strangler-flags-file"

// Provider is an OpenFeature provider backed by a Store: boolean flags
// whose value is true when the user goes to the service. The targeting key
// is the user id.
//
// Reasons: DISABLED for a disabled flag; TARGETING_MATCH when
// exclude_users, include_users or the flag's segments decided; SPLIT when
// the user's bucket decided; ERROR with FLAG_NOT_FOUND for a missing flag,
// TARGETING_KEY_MISSING without a user id and TYPE_MISMATCH for a
// non-boolean evaluation. The flag metadata "rule" tells excluded from
// not_eligible, the two rules behind TARGETING_MATCH to the monolith.
type Provider struct {
	store  *Store
	meta   map[Rule]openfeature.FlagMetadata
	events chan openfeature.Event
}

var (
	_ openfeature.FeatureProvider = (*Provider)(nil)
	_ openfeature.EventHandler    = (*Provider)(nil)
)

// NewProvider returns a provider reading store's snapshot in force at each
// evaluation.
func NewProvider(store *Store) *Provider {
	p := &Provider{store: store, meta: make(map[Rule]openfeature.FlagMetadata), events: make(chan openfeature.Event, 1)}
	for _, r := range []Rule{RuleNotFound, RuleNoUser, RuleDisabled, RuleExcluded, RuleIncluded, RuleNotEligible, RuleSplit} {
		p.meta[r] = openfeature.FlagMetadata{MetadataRule: string(r)}
	}
	return p
}

// Metadata names the provider.
func (p *Provider) Metadata() openfeature.Metadata {
	return openfeature.Metadata{Name: ProviderName}
}

// EventChannel delivers PROVIDER_CONFIGURATION_CHANGED events; see
// ConfigurationChanged.
func (p *Provider) EventChannel() <-chan openfeature.Event { return p.events }

// ConfigurationChanged tells the OpenFeature API that the flags changed
// (use it from StoreOptions.OnChange). Evaluations always read the snapshot
// in force, so the event is for the API's handlers only; while one event is
// still undelivered, another is not queued behind it.
func (p *Provider) ConfigurationChanged(s *Snapshot) {
	ev := openfeature.Event{
		ProviderName: ProviderName,
		EventType:    openfeature.ProviderConfigChange,
		ProviderEventDetails: openfeature.ProviderEventDetails{
			Message:     "flags file changed",
			FlagChanges: s.FlagKeys(),
		},
	}
	select {
	case p.events <- ev:
	default:
	}
}

// Hooks returns no hooks.
func (p *Provider) Hooks() []openfeature.Hook { return nil }

// BooleanEvaluation evaluates a rollout flag for the context's targeting
// key: true means the service.
func (p *Provider) BooleanEvaluation(_ context.Context, flag string, defaultValue bool, flatCtx openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	userID, _ := flatCtx[openfeature.TargetingKey].(string)
	var buf [8]string
	res := p.store.Snapshot().Evaluate(flag, userID, segmentsAttr(buf[:0], flatCtx[AttrSegments]))
	d := openfeature.BoolResolutionDetail{Value: res.Service}
	if res.Rule == RuleExcluded || res.Rule == RuleNotEligible {
		// The one reason (TARGETING_MATCH to the monolith) that stands for
		// two rules says which in the metadata. The other rules follow from
		// the reason and value alone, and skip the map copy the SDK makes
		// of any metadata.
		d.FlagMetadata = p.meta[res.Rule]
	}
	d.Variant = VariantMonolith
	if res.Service {
		d.Variant = VariantService
	}
	switch res.Rule {
	case RuleNotFound:
		d.Value, d.Variant, d.Reason = defaultValue, "", openfeature.ErrorReason
		d.ResolutionError = openfeature.NewFlagNotFoundResolutionError("flag " + flag + " is not in the flags file")
	case RuleNoUser:
		d.Value, d.Variant, d.Reason = defaultValue, "", openfeature.ErrorReason
		d.ResolutionError = openfeature.NewTargetingKeyMissingResolutionError("no user id (targeting key) to bucket")
	case RuleDisabled:
		d.Reason = openfeature.DisabledReason
	case RuleSplit:
		d.Reason = openfeature.SplitReason
	default:
		d.Reason = openfeature.TargetingMatchReason
	}
	return d
}

// segmentsAttr reads the segments attribute into dst.
func segmentsAttr(dst []string, v any) []string {
	switch t := v.(type) {
	case []string:
		return t
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				dst = append(dst, s)
			}
		}
	case string:
		dst = append(dst, t)
	}
	return dst
}

// StringEvaluation answers TYPE_MISMATCH (or FLAG_NOT_FOUND): rollout flags
// are boolean.
func (p *Provider) StringEvaluation(_ context.Context, flag string, defaultValue string, _ openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.notBoolean(flag)}
}

// FloatEvaluation answers TYPE_MISMATCH (or FLAG_NOT_FOUND).
func (p *Provider) FloatEvaluation(_ context.Context, flag string, defaultValue float64, _ openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.notBoolean(flag)}
}

// IntEvaluation answers TYPE_MISMATCH (or FLAG_NOT_FOUND).
func (p *Provider) IntEvaluation(_ context.Context, flag string, defaultValue int64, _ openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.notBoolean(flag)}
}

// ObjectEvaluation answers TYPE_MISMATCH (or FLAG_NOT_FOUND).
func (p *Provider) ObjectEvaluation(_ context.Context, flag string, defaultValue any, _ openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.notBoolean(flag)}
}

func (p *Provider) notBoolean(flag string) openfeature.ProviderResolutionDetail {
	d := openfeature.ProviderResolutionDetail{Reason: openfeature.ErrorReason}
	if !p.store.Snapshot().Has(flag) {
		d.ResolutionError = openfeature.NewFlagNotFoundResolutionError("flag " + flag + " is not in the flags file")
		return d
	}
	d.ResolutionError = openfeature.NewTypeMismatchResolutionError("flag " + flag + " is a boolean rollout flag")
	return d
}
