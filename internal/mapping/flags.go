package mapping

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// Environment variables that name the databases when neither a flag nor the
// config file does.
const (
	EnvSource = "DATASYNC_SOURCE"
	EnvTarget = "DATASYNC_TARGET"
)

// Flags are the connection and table flags that backfill, sync and verify
// share.
type Flags struct {
	Source     string
	Target     string
	ConfigFile string
	Tables     []string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	f.RegisterConnections(fs)
	fs.StringArrayVar(&f.Tables, "table", nil, "table to move, TABLE or SOURCE:TARGET (repeatable; adds to the config's tables)")
}

// RegisterConnections adds --source, --target and --config only, for
// commands that name tables their own way or not at all.
func (f *Flags) RegisterConnections(fs *pflag.FlagSet) {
	fs.StringVar(&f.Source, "source", "", "source (monolith) database URL (default: config file, then $"+EnvSource+")")
	fs.StringVar(&f.Target, "target", "", "target (service) database URL (default: config file, then $"+EnvTarget+")")
	fs.StringVar(&f.ConfigFile, "config", "", "datasync YAML config file with source, target and tables")
}

// Load builds the config from the flags: an explicit flag wins, then the
// config file, then the environment. It fails, naming the flag, when a
// database or the tables are missing.
func (f *Flags) Load(getenv func(string) string) (*Config, error) {
	return f.load(getenv, true)
}

// LoadConnections is Load for commands that need the databases but not
// necessarily tables (status, cleanup).
func (f *Flags) LoadConnections(getenv func(string) string) (*Config, error) {
	return f.load(getenv, false)
}

func (f *Flags) load(getenv func(string) string, needTables bool) (*Config, error) {
	cfg := &Config{}
	if f.ConfigFile != "" {
		c, err := LoadFile(f.ConfigFile, getenv)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	for _, v := range f.Tables {
		spec, err := ParseTableFlag(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		cfg.Tables = append(cfg.Tables, spec)
	}
	if f.Source != "" {
		cfg.Source = f.Source
	}
	if f.Target != "" {
		cfg.Target = f.Target
	}
	if cfg.Source == "" {
		cfg.Source = getenv(EnvSource)
	}
	if cfg.Target == "" {
		cfg.Target = getenv(EnvTarget)
	}
	var errs []error
	if cfg.Source == "" {
		errs = append(errs, fmt.Errorf("no source database: pass --source URL, set source in --config, or set $%s", EnvSource))
	}
	if cfg.Target == "" {
		errs = append(errs, fmt.Errorf("no target database: pass --target URL, set target in --config, or set $%s", EnvTarget))
	}
	if needTables && len(cfg.Tables) == 0 {
		errs = append(errs, errors.New("no tables: pass --table NAME (repeatable) or list tables in --config"))
	}
	if problems := cfg.validate(); len(problems) > 0 {
		errs = append(errs, &ConfigError{File: f.ConfigFile, Problems: problems})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return cfg, nil
}
