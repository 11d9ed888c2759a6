package toggles

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
)

const benchFlags = `segments:
  employees: {claim: email, suffix: "@example.com"}
flags:
  users-migration: {percentage: 30, include_users: [u-qa-1], exclude_users: [u-bad]}
  staff-first:
    percentage: 5
    segments: [employees]
    segment_percentages: {employees: 100}
`

// BenchmarkDecision is a routing decision as the proxy makes it: the user
// id from a header, then the flag through the OpenFeature client.
func BenchmarkDecision(b *testing.B) {
	s := openStore(b, benchFlags, StoreOptions{})
	d := newTestDecider(b, s, nil)
	var failures []string
	r := newTestResolver(b, []IdentitySource{{Header: "X-User-ID"}}, AnonymousMonolith, &failures)
	req := httptest.NewRequest(http.MethodGet, "/api/users/1", nil)
	req.Header.Set("X-User-ID", "550e8400-e29b-41d4-a716-446655440000")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d.Decide(ctx, "users-migration", r.Resolve(req), req.Header)
	}
}

// BenchmarkDecisionWithMetrics adds the decision counter.
func BenchmarkDecisionWithMetrics(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	d := newTestDecider(b, openStore(b, benchFlags, StoreOptions{}), m)
	id := Identity{UserID: "550e8400-e29b-41d4-a716-446655440000"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d.Decide(ctx, "users-migration", id, nil)
	}
}

// BenchmarkDecisionSegment decides a flag with a claim segment.
func BenchmarkDecisionSegment(b *testing.B) {
	d := newTestDecider(b, openStore(b, benchFlags, StoreOptions{}), nil)
	id := Identity{UserID: "u-42", Claims: map[string]any{"email": "ann@example.com"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d.Decide(ctx, "staff-first", id, nil)
	}
}

// BenchmarkSDKClient is the bare OpenFeature client call the Decider makes:
// the SDK's share of a decision.
func BenchmarkSDKClient(b *testing.B) {
	client, shutdown, err := NewClient(context.Background(), openStore(b, benchFlags, StoreOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = shutdown(context.Background()) })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = client.BooleanValueDetails(ctx, "users-migration", false,
			openfeature.NewEvaluationContext("550e8400-e29b-41d4-a716-446655440000", nil))
	}
}

// constProvider answers every boolean flag with true, doing no work: with
// it, BenchmarkSDKOverhead measures what the SDK itself costs per call.
type constProvider struct{}

func (constProvider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: "const"} }
func (constProvider) Hooks() []openfeature.Hook      { return nil }
func (constProvider) BooleanEvaluation(context.Context, string, bool, openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	return openfeature.BoolResolutionDetail{Value: true, ProviderResolutionDetail: openfeature.ProviderResolutionDetail{Reason: openfeature.StaticReason}}
}
func (constProvider) StringEvaluation(_ context.Context, _ string, v string, _ openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	return openfeature.StringResolutionDetail{Value: v}
}
func (constProvider) FloatEvaluation(_ context.Context, _ string, v float64, _ openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{Value: v}
}
func (constProvider) IntEvaluation(_ context.Context, _ string, v int64, _ openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{Value: v}
}
func (constProvider) ObjectEvaluation(_ context.Context, _ string, v any, _ openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{Value: v}
}

// BenchmarkSDKOverhead is the OpenFeature client over a provider that does
// nothing: the SDK's own cost per evaluation.
func BenchmarkSDKOverhead(b *testing.B) {
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(context.Background(), constProvider{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	client := api.NewClient()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = client.BooleanValueDetails(ctx, "users-migration", false,
			openfeature.NewEvaluationContext("550e8400-e29b-41d4-a716-446655440000", nil))
	}
}

// BenchmarkProvider is the bare provider call, without the SDK.
func BenchmarkProvider(b *testing.B) {
	p := NewProvider(openStore(b, benchFlags, StoreOptions{}))
	flat := openfeature.FlattenedContext{openfeature.TargetingKey: "550e8400-e29b-41d4-a716-446655440000"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p.BooleanEvaluation(ctx, "users-migration", false, flat)
	}
}

// BenchmarkResolveHeader is the identity step alone.
func BenchmarkResolveHeader(b *testing.B) {
	var failures []string
	r := newTestResolver(b, []IdentitySource{{Header: "X-User-ID"}}, AnonymousMonolith, &failures)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("X-User-ID", "550e8400-e29b-41d4-a716-446655440000")
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve(req)
	}
}

// BenchmarkSnapshotEvaluate is the rollout rules with the bucket, no SDK.
func BenchmarkSnapshotEvaluate(b *testing.B) {
	snap := openStore(b, benchFlags, StoreOptions{}).Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		snap.Evaluate("users-migration", "550e8400-e29b-41d4-a716-446655440000", nil)
	}
}

// BenchmarkResolveJWT is the identity step from an HS256 token.
func BenchmarkResolveJWT(b *testing.B) {
	var failures []string
	r := newTestResolver(b, []IdentitySource{{JWT: &JWTSource{HS256SecretEnv: "JWT_SECRET"}}}, AnonymousMonolith, &failures)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+signHS(b, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "u-1", "email": "a@example.com"}))
	b.ReportAllocs()
	for b.Loop() {
		if r.Resolve(req).UserID == "" {
			b.Fatal("token not believed")
		}
	}
}

// BenchmarkDecisionParallel is BenchmarkDecisionWithMetrics from every
// core at once, as a busy proxy decides: contention in the client or the
// metrics shows here.
func BenchmarkDecisionParallel(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	d := newTestDecider(b, openStore(b, benchFlags, StoreOptions{}), m)
	id := Identity{UserID: "550e8400-e29b-41d4-a716-446655440000"}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Decide(ctx, "users-migration", id, nil)
		}
	})
}
