// Package dbconn opens every connection datasync makes: the pools of
// backfill, sync, verify, status and cleanup, and sync's replication
// connection. It does two things for all of them, in one place.
//
// It pins the session settings that change how values print as text.
// Values travel between the databases as text in several places (the
// sync's copy, the change stream, key values), and the server prints them
// under the session's DateStyle, IntervalStyle, extra_float_digits, TimeZone
// and bytea_output. A source database with ALTER DATABASE … SET datestyle =
// 'SQL, DMY' would print 2024-12-07 as 07/12/2024, which a target under
// another DateStyle reads back as July 12 (issue 15, item 2). The settings
// go into the startup packet, so they also hold on a replication connection,
// where SET is refused, and they win over ALTER DATABASE and ALTER ROLE.
//
// It never prints any part of a password. A connection string that cannot
// be parsed is reported without the string (the parser's own redaction is
// best effort), and a URL whose user name or password holds an unescaped
// '@', '/', '?' or '#' is refused before it is parsed, since parsers then
// disagree on where the password ends and part of it would show as the host
// or the database in later errors (issue 15, item 14).
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrURL is wrapped by every error about a connection string that datasync
// refuses or cannot parse.
var ErrURL = errors.New("invalid database URL")

// pinned are the session settings of every connection, in the startup
// packet. ISO dates read back the same under any DateStyle order; the float
// and interval forms are the ones every type input function reads exactly.
var pinned = [...][2]string{
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "3"},
	{"TimeZone", "UTC"},
	{"bytea_output", "hex"},
}

// Settings returns the pinned session settings, name → value.
func Settings() map[string]string {
	out := make(map[string]string, len(pinned))
	for _, kv := range pinned {
		out[kv[0]] = kv[1]
	}
	return out
}

// FunctionSettings is the pinned session settings as SET clauses of CREATE
// FUNCTION, for a function that must write values as text the way datasync's
// sessions read them, whatever the calling session's settings.
func FunctionSettings() string {
	parts := make([]string, len(pinned))
	for i, kv := range pinned {
		parts[i] = "SET " + kv[0] + " = '" + kv[1] + "'"
	}
	return strings.Join(parts, " ")
}

// Pin sets the pinned session settings in params (a connection config's
// RuntimeParams), over any value the connection string gave them.
func Pin(params map[string]string) {
	for _, kv := range pinned {
		// The server matches setting names without regard to case: drop
		// another spelling so that the pinned value is the one sent.
		for k := range params {
			if strings.EqualFold(k, kv[0]) {
				delete(params, k)
			}
		}
		params[kv[0]] = kv[1]
	}
}

// CheckURL refuses a postgres:// or postgresql:// URL whose user name or
// password holds a character that must be percent-encoded there. side
// ("source", "target") names the URL in the error; the URL itself is never
// part of it. Key/value connection strings pass unchecked: their parse
// errors are reported without the string.
func CheckURL(side, url string) error {
	var rest string
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		if len(url) >= len(scheme) && strings.EqualFold(url[:len(scheme)], scheme) {
			rest = url[len(scheme):]
			break
		}
	}
	if rest == "" {
		return nil
	}
	// The authority ends at the first '/', '?' or '#'; only its last '@'
	// may separate the user information from the host.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	switch {
	case strings.Count(rest[:end], "@") > 1:
		return fmt.Errorf("%s database URL: more than one '@' before the host: percent-encode an '@' in the user name or password as %%40 (the URL is not shown, since it may hold a password): %w", side, ErrURL)
	case strings.Contains(rest[end:], "@"):
		return fmt.Errorf("%s database URL: an '@' after the host part: if a '/', '?' or '#' in the user name or password ended the host part early, percent-encode it (%%2F, %%3F, %%23); percent-encode any other '@' as %%40 (the URL is not shown, since it may hold a password): %w", side, ErrURL)
	}
	return nil
}

// parseError is what a connection string that does not parse becomes: the
// parser's message quotes the string, redacted only as far as it could tell
// where the password is, so none of it is kept.
func parseError(side string) error {
	return fmt.Errorf("%s database URL cannot be parsed: check its form (postgres://USER:PASSWORD@HOST:PORT/DATABASE, with special characters in the user name and password percent-encoded) (the URL is not shown, since it may hold a password): %w", side, ErrURL)
}

// PoolConfig parses url into a pool config with the pinned session settings
// and application_name set to app (unless the URL sets one).
func PoolConfig(side, url, app string) (*pgxpool.Config, error) {
	if err := CheckURL(side, url); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, parseError(side)
	}
	params := cfg.ConnConfig.RuntimeParams
	if _, ok := params["application_name"]; !ok && app != "" {
		params["application_name"] = app
	}
	Pin(params)
	return cfg, nil
}

// ReplicationConfig parses url into the config of a logical replication
// connection (replication=database) with the pinned session settings: the
// walsender prints the change stream's values under them.
func ReplicationConfig(side, url, app string) (*pgconn.Config, error) {
	if err := CheckURL(side, url); err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, parseError(side)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok && app != "" {
		cfg.RuntimeParams["application_name"] = app
	}
	cfg.RuntimeParams["replication"] = "database"
	Pin(cfg.RuntimeParams)
	return cfg, nil
}

// Open connects a pool to url: PoolConfig, then configure (if not nil) to
// change the config further, then a ping, so that a wrong URL or password
// fails here. Errors name side and the host, never the password.
func Open(ctx context.Context, side, url, app string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(side, url, app)
	if err != nil {
		return nil, err
	}
	if configure != nil {
		configure(cfg)
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, Scrub(fmt.Errorf("%s database %s: %w", side, where, err), cfg.ConnConfig.Password)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, Scrub(fmt.Errorf("%s database %s: %w", side, where, err), cfg.ConnConfig.Password)
	}
	return pool, nil
}

// Scrub returns err with every occurrence of password in its text masked.
// It is a second line of defence: CheckURL already keeps password text out
// of host and database names. Passwords shorter than 4 characters are left
// to that, since masking them would mangle ordinary words.
func Scrub(err error, password string) error {
	if err == nil || len(password) < 4 || !strings.Contains(err.Error(), password) {
		return err
	}
	return &scrubbed{err: err, password: password}
}

type scrubbed struct {
	err      error
	password string
}

func (e *scrubbed) Error() string { return strings.ReplaceAll(e.err.Error(), e.password, "xxxxx") }
func (e *scrubbed) Unwrap() error { return e.err }
