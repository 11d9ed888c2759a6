// Package toggles decides, per request, whether a rollout flag sends a user
// to the new service or keeps them on the monolith.
//
// The pieces, in the order a request meets them:
//
//   - Resolver finds the user id: from a header, a cookie or a verified JWT
//     (HS256 or RS256; the alg must be the configured one, exp and nbf are
//     checked), the first source that yields one winning. A token that is
//     not believed is counted and skipped. Anonymous visitors go to the
//     monolith, or get a random id in a sticky cookie.
//   - Store holds the flags file (DESIGN.md's YAML) as an immutable,
//     compiled Snapshot behind an atomic pointer, so reads take no lock. It
//     reloads the file when it changes (an invalid file is reported and the
//     old state kept) and applies operator changes with Update, which
//     validates, writes the file atomically and puts the change in force
//     before it returns.
//   - Provider is an OpenFeature provider over the Store; Decider evaluates
//     a flag through an OpenFeature client with the user id as targeting
//     key and the user's segment memberships as the "segments" attribute.
//   - Bucket is flagd's fractional bucketing, bit for bit: murmur3 x86
//     32-bit (seed 0) over flagKey+userID, scaled to 10,000 buckets. A user
//     is in iff their bucket is below round(percentage*100), so raising a
//     percentage only adds users and a flag exported with ExportFlagd keeps
//     every user in the same cohort under flagd.
//
// The rules (DESIGN.md, "Routing and rollout rules"): the service iff the
// flag is enabled and the user is not excluded and (included, or eligible —
// the flag has no segments or the user is in one of them — and the bucket
// is below the percentage that applies: the segment's own, else the
// flag's). A missing flag, a provider error or no user id mean the
// monolith.
//
// Segments over request headers are only as trustworthy as the headers: a
// client can send any header it likes unless something in front of the
// proxy strips or sets it. Base anything that matters on claims of a
// verified JWT.
//
// Start wires these together for a proxy and returns a Rollout: per
// request, Rollout.Decide(req, flagKey) returns the decision and the
// identity (whose sticky cookie, if new, goes on the response). The lower
// pieces stay available for the explain command and for tests.
//
// NewAdminHandler serves the admin API's /admin/flags endpoints over a Store;
// NewMetrics registers strangler_rollout_percentage,
// strangler_rollout_decisions_total and
// strangler_identity_jwt_failures_total into a registry it is given. The
// togglescmd subpackage has the rollout and flags export commands.
package toggles
