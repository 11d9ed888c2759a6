package dbconn

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckURL(t *testing.T) {
	tests := []struct {
		name, url string
		ok        bool
	}{
		{"plain", "postgres://u:pw@127.0.0.1:5432/db", true},
		{"encoded @", "postgres://u:p%40w@127.0.0.1/db", true},
		{"no password", "postgresql://u@h/db?sslmode=disable", true},
		{"no user", "postgres://h/db", true},
		{"multi host", "postgres://u:pw@h1:5432,h2:5433/db", true},
		{"key/value", "host=h password=a@b", true},
		{"second @", "postgres://u:p@w@127.0.0.1/db", false},
		{"upper-case scheme", "POSTGRES://u:p@w@127.0.0.1/db", false},
		{"slash in password", "postgres://u:p/w@127.0.0.1/db", false},
		{"question mark in password", "postgres://u:p?w@127.0.0.1/db", false},
		{"hash in password", "postgres://u:p#w@127.0.0.1/db", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckURL("source", tc.url)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrURL) || !strings.HasPrefix(err.Error(), "source database URL")) {
				t.Errorf("got %q, want an ErrURL naming the source", err)
			}
		})
	}
}

func TestPinOverridesEverySpelling(t *testing.T) {
	params := map[string]string{"datestyle": "SQL, DMY", "TimeZone": "Asia/Kolkata", "application_name": "x"}
	Pin(params)
	want := Settings()
	want["application_name"] = "x"
	if len(params) != len(want) {
		t.Fatalf("got %v, want %v", params, want)
	}
	for k, v := range want {
		if params[k] != v {
			t.Errorf("%s: got %q, want %q", k, params[k], v)
		}
	}
}

func TestReplicationConfigPinsSettings(t *testing.T) {
	cfg, err := ReplicationConfig("source", "postgres://u:pw@127.0.0.1:5432/db?datestyle=SQL", "datasync sync")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range Settings() {
		if cfg.RuntimeParams[k] != v {
			t.Errorf("%s: got %q, want %q", k, cfg.RuntimeParams[k], v)
		}
	}
	if cfg.RuntimeParams["replication"] != "database" {
		t.Errorf("replication: got %q, want database", cfg.RuntimeParams["replication"])
	}
}
