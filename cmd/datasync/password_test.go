package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

// TestPasswordNeverPrinted pins issue 15, item 14: a URL whose password
// holds an unescaped '@' printed part of it (Secret@127.0.0.1) in the
// error. Every command gets malformed URLs of several kinds, as source and
// as target, pointing at a real server; no part of the password may show
// on stdout or stderr (the log included), and each run exits 2.
func TestPasswordNeverPrinted(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	mustExec(t, src.Pool, `CREATE TABLE users (id int PRIMARY KEY, v text)`)
	mustExec(t, dst.Pool, `CREATE TABLE users (id int PRIMARY KEY, v text)`)
	u, err := url.Parse(src.URL)
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host // 127.0.0.1:PORT of the test server
	// Each password is Zq7 plus a character that must be percent-encoded,
	// plus Secret; neither half may be printed.
	bad := map[string]string{
		"unescaped @":         "postgres://postgres:Zq7@Secret@" + host + "/x",
		"unescaped @ twice":   "postgres://postgres:Zq7@Sec@ret@" + host + "/x",
		"unescaped /":         "postgres://postgres:Zq7/Secret@" + host + "/x",
		"unescaped ?":         "postgresql://postgres:Zq7?Secret@" + host + "/x",
		"unescaped #":         "postgres://postgres:Zq7#Secret@" + host + "/x",
		"bad percent escape":  "postgres://postgres:Zq7%zzSecret@" + host + "/x",
		"bad port":            "postgres://postgres:Zq7Secret@" + host + "0000/x",
		"unclosed IPv6":       "postgres://postgres:Zq7Secret@[::1/x",
		"unterminated quote":  "host=127.0.0.1 password='Zq7 Secret",
		"keyword without '='": "host=127.0.0.1 password=Zq7 Secret",
		"unreachable server":  "postgres://postgres:Zq7Secret@127.0.0.1:1/x?connect_timeout=2",
	}
	commands := map[string][]string{
		"backfill": {"backfill", "--table", "users"},
		"sync":     {"sync", "--name", "pw", "--table", "users", "--until-caught-up"},
		"verify":   {"verify", "--table", "users"},
		"status":   {"status", "--name", "pw"},
		"cleanup":  {"cleanup", "--name", "pw"},
	}
	for cmdName, cmd := range commands {
		for name, raw := range bad {
			for _, side := range []string{"source", "target"} {
				t.Run(cmdName+"/"+side+"/"+name, func(t *testing.T) {
					conn := []string{"--source", raw, "--target", dst.URL}
					if side == "target" {
						conn = []string{"--source", src.URL, "--target", raw}
					}
					code, out, errOut := runCmd(t, append(cmd[:1:1], append(conn, cmd[1:]...)...)...)
					if code != 2 {
						t.Errorf("exit code: got %d, want 2; stderr:\n%s", code, errOut)
					}
					for _, part := range []string{"Zq7", "Secret", "Sec", "ret@"} {
						if strings.Contains(out+errOut, part) {
							t.Errorf("output shows %q of the password:\nstdout:\n%s\nstderr:\n%s", part, out, errOut)
						}
					}
				})
			}
		}
	}
}
