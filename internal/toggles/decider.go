package toggles

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// Backends a decision sends a request to, as in metric labels.
const (
	BackendService  = "service"
	BackendMonolith = "monolith"
)

// ReasonError is the decision reason when the provider failed for another
// reason than a missing flag or user id.
const ReasonError = "error"

// reasonLabel maps an OpenFeature reason (and the value, which tells
// included from excluded) to a Rule label.
func reasonLabel(r openfeature.Reason, value bool) string {
	switch r {
	case openfeature.SplitReason:
		return string(RuleSplit)
	case openfeature.DisabledReason:
		return string(RuleDisabled)
	case openfeature.TargetingMatchReason:
		if value {
			return string(RuleIncluded)
		}
		return string(RuleExcluded)
	}
	// Another provider's reason.
	return strings.ToLower(string(r))
}

// Decision is where one request goes for one flag.
type Decision struct {
	// Service is true when the request goes to the service.
	Service bool
	// Reason is a bounded label: a Rule's value, or ReasonError.
	Reason string
	// UserID is the id the user was bucketed by; empty when anonymous.
	UserID string
	// Bucket is the user's bucket, 0..BucketCount-1; valid when HasBucket.
	Bucket uint32
	// HasBucket is true when the bucket took part in the decision.
	HasBucket bool
}

// Backend returns BackendService or BackendMonolith.
func (d Decision) Backend() string {
	if d.Service {
		return BackendService
	}
	return BackendMonolith
}

// Decider answers, per request, whether a flag sends it to the service,
// evaluating the flag through an OpenFeature client as any application
// would. It is safe for concurrent use.
type Decider struct {
	client  *openfeature.Client
	store   *Store
	metrics *Metrics
}

// NewDecider returns a Decider evaluating through client. store supplies
// the segment rules the evaluation context is built from; metrics may be
// nil.
func NewDecider(client *openfeature.Client, store *Store, metrics *Metrics) *Decider {
	return &Decider{client: client, store: store, metrics: metrics}
}

// NewClient sets up an OpenFeature API of its own (no global state) with a
// Provider over store, waits until it is ready and returns a client of it.
// Call shutdown when done.
func NewClient(ctx context.Context, store *Store) (client *openfeature.Client, shutdown func(context.Context) error, err error) {
	return newClientFor(ctx, NewProvider(store))
}

func newClientFor(ctx context.Context, p *Provider) (*openfeature.Client, func(context.Context) error, error) {
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		return nil, nil, fmt.Errorf("set up flag provider: %w", err)
	}
	return api.NewClient(), api.Shutdown, nil
}

// Decide evaluates flagKey for the identified user. An anonymous identity,
// a missing flag and a provider error all mean the monolith. h are the
// request's headers, for header-based segments.
func (d *Decider) Decide(ctx context.Context, flagKey string, id Identity, h http.Header) Decision {
	dec := d.decide(ctx, flagKey, id, h)
	if d.metrics != nil {
		d.metrics.ObserveDecision(flagKey, dec)
	}
	return dec
}

func (d *Decider) decide(ctx context.Context, flagKey string, id Identity, h http.Header) Decision {
	if id.UserID == "" {
		return Decision{Reason: string(RuleNoUser)}
	}
	var attrs map[string]any
	// Memberships are only worked out (and only allocate) for a flag
	// with segments.
	if in := d.store.Snapshot().AppendMemberships(nil, flagKey, id.Claims, h); len(in) > 0 {
		attrs = map[string]any{AttrSegments: in}
	}
	details, err := d.client.BooleanValueDetails(ctx, flagKey, false, openfeature.NewEvaluationContext(id.UserID, attrs))
	dec := Decision{UserID: id.UserID, Service: err == nil && details.Value}
	rule, _ := details.FlagMetadata[MetadataRule].(string)
	switch {
	case details.ErrorCode == openfeature.FlagNotFoundCode:
		dec.Reason = string(RuleNotFound)
	case err != nil:
		dec.Reason = ReasonError
	case rule != "":
		dec.Reason = rule
	default:
		dec.Reason = reasonLabel(details.Reason, details.Value)
	}
	if dec.Reason == string(RuleSplit) || dec.Reason == string(RuleNotEligible) {
		dec.Bucket, dec.HasBucket = Bucket(flagKey, id.UserID), true
	}
	return dec
}
