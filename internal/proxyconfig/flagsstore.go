package proxyconfig

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// FlagsStoreConfig is flags_store: the PostgreSQL database the replicas
// share their flags through. It is written as a mapping,
//
//	flags_store:
//	  postgres: ${STRANGLER_FLAGS_DATABASE_URL}
//	  cache_file: flags-cache.json   # optional
//	  replica_name: proxy-a          # optional
//
// or as the URL alone (flags_store: ${STRANGLER_FLAGS_DATABASE_URL}).
type FlagsStoreConfig struct {
	// Postgres is the connection URL (postgres://...), or ${VARIABLE}
	// parts read from the environment at start.
	Postgres string `yaml:"postgres"`
	// CacheFile is the local copy of the flags, relative to the config
	// file's folder; default flags-cache.json beside the config file.
	CacheFile string `yaml:"cache_file"`
	// ReplicaName names this replica; default hostname-pid.
	ReplicaName string `yaml:"replica_name"`
}

// flagsStoreKeys lists the mapping's keys, for messages.
const flagsStoreKeys = "postgres, cache_file, replica_name"

// UnmarshalYAML reads the mapping or a plain URL string.
func (f *FlagsStoreConfig) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*f = FlagsStoreConfig{Postgres: n.Value}
		return nil
	case yaml.MappingNode:
		out := FlagsStoreConfig{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return typeError(fmt.Sprintf("line %d: flags_store.%s: want a string", v.Line, k.Value))
			}
			switch k.Value {
			case "postgres":
				out.Postgres = v.Value
			case "cache_file":
				out.CacheFile = v.Value
			case "replica_name":
				out.ReplicaName = v.Value
			default:
				return typeError(fmt.Sprintf("line %d: flags_store.%s: unknown key; known keys here: %s", k.Line, k.Value, flagsStoreKeys))
			}
		}
		*f = out
		return nil
	}
	return typeError(fmt.Sprintf("line %d: flags_store: want a PostgreSQL URL or a mapping with %s", n.Line, flagsStoreKeys))
}

var envRef = regexp.MustCompile(`\$\{([^}]*)\}`)

func (f *FlagsStoreConfig) validate(v *validator) {
	if f == nil {
		return
	}
	const p = "flags_store.postgres"
	raw := strings.TrimSpace(f.Postgres)
	switch {
	case raw == "":
		v.add(p, "is required: a postgres:// URL, or ${VARIABLE} naming the environment variable that holds it")
	case envRef.MatchString(raw):
		for _, m := range envRef.FindAllStringSubmatch(raw, -1) {
			if !envName.MatchString(m[1]) {
				v.add(p, fmt.Sprintf("${%s} does not name an environment variable", m[1]))
			}
		}
	default:
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			v.add(p, "is not a PostgreSQL URL: write postgres://user@host:5432/dbname (put the password in ${VARIABLE} or PGPASSWORD, not in the file)")
		}
	}
	if f.ReplicaName != "" && !serviceName.MatchString(f.ReplicaName) {
		v.add("flags_store.replica_name", "a replica name is letters, digits, '_', '.' and '-'")
	}
}

// FlagsStoreURL is flags_store.postgres with ${VARIABLE} parts read
// through getenv (nil means os.Getenv). An unset or empty variable is an
// error naming it.
func (c *Config) FlagsStoreURL(getenv func(string) string) (string, error) {
	if c.FlagsStore == nil {
		return "", nil
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	var missing []string
	out := envRef.ReplaceAllStringFunc(c.FlagsStore.Postgres, func(m string) string {
		name := m[2 : len(m)-1]
		val := getenv(name)
		if val == "" {
			missing = append(missing, name)
		}
		return val
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("flags_store.postgres: environment variable %s is not set: export it with the PostgreSQL URL", strings.Join(missing, ", "))
	}
	return strings.TrimSpace(out), nil
}

// FlagsCachePath is flags_store.cache_file resolved against the config
// file's folder (default flags-cache.json beside the config file), or ""
// without flags_store.
func (c *Config) FlagsCachePath() string {
	if c.FlagsStore == nil {
		return ""
	}
	f := c.FlagsStore.CacheFile
	if f == "" {
		f = "flags-cache.json"
	}
	if filepath.IsAbs(f) {
		return f
	}
	return filepath.Join(c.dir, f)
}
