// Package shadow sends background copies of a route's monolith-bound
// requests to the route's new service and compares the two answers, so a
// team can see how the service differs before a single user is moved.
//
// # What is copied
//
// Only requests the rollout sends to the monolith, only safe methods (GET,
// HEAD, OPTIONS: a copied write would be performed twice), and only the
// route's shadow percentage of them. The client always gets the monolith's
// answer untouched and on time: the copy is made after the monolith
// answered, on a goroutine of a bounded pool (Options.MaxConcurrent). When
// every slot is busy the copy is dropped and counted, never queued behind
// the client.
//
// # How the proxy hands the monolith's answer over
//
// In the reverse proxy's Rewrite, for a request going to the monolith:
//
//	capture := shadower.Begin(routeName, pr.In) // nil: not shadowed
//
// and in ModifyResponse, for that request's answer:
//
//	capture.WrapResponse(resp)
//
// WrapResponse swaps resp.Body for a reader that passes each chunk to the
// client's copy loop unchanged and appends it to a buffer capped at
// Options.MaxBody (pre-sized from Content-Length). The proxy's own copy to
// the client is not delayed: the tee costs one memory copy per chunk. When
// the proxy reaches the end of the body and closes it, the buffered answer
// goes to [Shadower.Submit], which returns at once. Callers with their own
// capture can call [Shadower.Sample] and Submit directly.
//
// # How answers are compared
//
//   - status codes;
//   - headers: every header either answer has, except
//     [DefaultIgnoredHeaders], the route's ignore_headers and headers learned
//     to be noise; values compared as the comma-joined list;
//   - bodies, after undoing a gzip Content-Encoding: when the monolith's
//     Content-Type is JSON (application/json or +json), as JSON data — key
//     order and number formatting do not matter (1, 1.0, 1e0 and 10e-1 are
//     the same number, compared exactly from their decimal text), array
//     order does; members at ignore_json_paths ($, .key, ["key"], [n], [*])
//     are skipped. Other bodies are compared byte for byte.
//
// Each comparison counts strangler_shadow_comparisons_total{route,result}
// with result match, mismatch, error (the service could not be asked, or its
// body was over MaxBody) or dropped. The last Options.KeepMismatches
// mismatches of each route, each with its differences (path, monolith
// value, service value), are served by [Shadower.Handler] for
// GET /admin/shadow/mismatches?route=.
//
// # Noise: the A/A baseline
//
// With noise_check on, a sample of the copies (Options.NoiseSample, 10 %
// by default) also asks the monolith the same request a second time, before
// the service's answer is compared. What differs between the monolith's two
// answers — timestamps, generated ids, ordering — is counted per path, with
// array indices generalised to [*]. A path (or header, or the status, or a
// non-JSON body) that differed in Options.NoiseObservations A/A checks (two
// by default, [DefaultNoiseObservations]) is noise: from then on it is left
// out of that route's comparisons. The handler lists what was learned.
//
// Copies carry the header X-Strangler-Shadow: true.
package shadow
