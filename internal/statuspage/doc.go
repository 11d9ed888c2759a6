// Package statuspage is the page strangler-proxy's admin listener serves at
// GET /: where each route stands at a glance, for the people who raise the
// rollout.
//
// It is plain server-rendered HTML (html/template, embedded with embed) that
// refreshes itself every few seconds, with no script. It reads nothing the
// admin API does not already show: it asks the admin handler itself for
// GET /admin/ (routes, services, breakers, health), GET /admin/flags (the
// flags with their guard and ramp state), GET /admin/shadow/mismatches and,
// where the proxy runs in fleet mode, GET /admin/replicas; and it gathers the
// Prometheus registry for traffic, fallbacks and latency. Rates and the p99
// are computed over the last minute from samples the page keeps between
// renders, so the first view after a start shows totals only.
//
// Reading the page needs no token. Its buttons (set a percentage, the kill
// switch, resume after a guard trip) post a form with a token field; the page
// sends the matching admin API write with that token as its bearer token, so
// the write is checked, validated and persisted exactly as from the CLI.
package statuspage
