package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// Default values of Options.
const (
	DefaultMaxSamples = 100
	DefaultLeafRows   = 2000
	DefaultMaxBuckets = 1024
	DefaultFanout     = 32
	DefaultBatchSize  = 1000
	DefaultWorkers    = 4
	// DefaultName is sync's default --name.
	DefaultName = "datasync"
)

// HashMode chooses how rows are hashed.
type HashMode string

// Hash modes. HashAuto picks HashRecord on PostgreSQL 14 and later, else
// HashMD5.
const (
	HashAuto   HashMode = ""
	HashRecord HashMode = "record"
	HashMD5    HashMode = "md5"
)

// Options tune a verification. The zero value verifies with the defaults and
// changes nothing.
type Options struct {
	// MaxSamples caps the keys of each kind listed in a table's samples;
	// 0 means DefaultMaxSamples, negative means none.
	MaxSamples int
	// RecheckDelay, when positive, reads every differing key again after
	// this delay and keeps only the differences that persist.
	RecheckDelay time.Duration
	// Repair makes the target match the source for every difference found,
	// then verifies again.
	Repair bool
	// DryRun, with Repair, plans the repair without writing.
	DryRun bool
	// LeafRows is the largest range compared row by row (DefaultLeafRows).
	LeafRows int
	// MaxBuckets caps the buckets of the first pass (DefaultMaxBuckets).
	MaxBuckets int
	// Fanout is how many parts a differing range is split into
	// (DefaultFanout).
	Fanout int
	// BatchSize is the number of keys per repair transaction and per
	// recheck query (DefaultBatchSize).
	BatchSize int
	// Workers is how many differing ranges are narrowed down at once
	// (DefaultWorkers); each holds a connection to each database.
	Workers int
	// TwoWay classifies each difference by the side that wrote the row
	// last, for a two-way sync named Name, and repairs toward that side:
	// see the package documentation.
	TwoWay bool
	// Name is the sync's name (its origins are datasync_NAME_to_target
	// and datasync_NAME_to_source); DefaultName when empty.
	Name string
	// Hash forces a hash mode; the default picks by server version.
	Hash HashMode
	// Progress, if set, is called as ranges of a table are checked, from
	// several goroutines at once.
	Progress func(Progress)
	// Logger receives debug details; nil discards them.
	Logger *slog.Logger

	// afterRepairRead, when set, runs in each repair batch between
	// reading the rows to write and writing them (a test hook).
	afterRepairRead func(ctx context.Context)
	// beforeRepair, when set, runs between comparing a table and
	// repairing it (a test hook).
	beforeRepair func(ctx context.Context)
}

// Progress reports how far the check of one table has come. Done and Total
// count rows of the larger side; Total is an estimate until Phase is
// PhaseDone.
type Progress struct {
	Table string
	Phase Phase
	Done  int64
	Total int64
}

// Phase is a stage of a table's verification.
type Phase string

// Phases of a table's verification.
const (
	PhaseScan    Phase = "scan"
	PhaseBisect  Phase = "bisect"
	PhaseRecheck Phase = "recheck"
	PhaseRepair  Phase = "repair"
	PhaseDone    Phase = "done"
)

func (o Options) withDefaults() Options {
	if o.MaxSamples == 0 {
		o.MaxSamples = DefaultMaxSamples
	}
	if o.MaxSamples < 0 {
		o.MaxSamples = 0
	}
	if o.LeafRows <= 0 {
		o.LeafRows = DefaultLeafRows
	}
	if o.MaxBuckets <= 1 {
		o.MaxBuckets = DefaultMaxBuckets
	}
	if o.Fanout <= 1 {
		o.Fanout = DefaultFanout
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Errors Verify wraps.
var (
	// ErrHashMode is returned for a hash mode the servers cannot run.
	ErrHashMode = errors.New("unsupported hash mode")
	// ErrSession is returned for pools not set up by Connect or
	// ConfigurePool, whose text forms would not match.
	ErrSession = errors.New("connection not configured for verify: open it with reconcile.Connect")
)

// Verify compares every table of tables between src and dst and returns the
// report. Differences are not errors: they are in the report. An error means
// the comparison could not be completed.
func Verify(ctx context.Context, src, dst *pgxpool.Pool, tables []*mapping.Table, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	rep := &Report{StartedAt: time.Now().UTC(), Consistent: true, Tables: []TableReport{}}
	var tw *twoWay
	if opts.TwoWay {
		var err error
		if tw, err = prepareTwoWay(ctx, src, dst, opts.Name); err != nil {
			return nil, err
		}
	} else if opts.Repair && !opts.DryRun {
		if err := checkNoTwoWaySync(ctx, src, opts.Name); err != nil {
			return nil, err
		}
	}
	for _, t := range tables {
		tr, err := verifyTable(ctx, src, dst, t, opts, tw)
		if err != nil {
			return nil, fmt.Errorf("verify %s → %s: %w", t.Source, t.Target, err)
		}
		rep.Tables = append(rep.Tables, *tr)
		rep.Consistent = rep.Consistent && tr.Consistent
	}
	rep.DurationSeconds = time.Since(rep.StartedAt).Seconds()
	return rep, nil
}

func verifyTable(ctx context.Context, src, dst *pgxpool.Pool, t *mapping.Table, opts Options, tw *twoWay) (*TableReport, error) {
	start := time.Now()
	pair, err := newPair(ctx, src, dst, t, opts.Hash)
	if err != nil {
		return nil, err
	}
	opts.Logger.DebugContext(ctx, "verify table", "source", t.Source.String(), "target", t.Target.String(), "hash", pair.mode)
	res, err := pair.find(ctx, opts)
	if err != nil {
		return nil, err
	}
	if tw != nil {
		if err := pair.classify(ctx, &res.diffs, tw); err != nil {
			return nil, err
		}
	}
	tr := &TableReport{
		Source:          t.Source.String(),
		Target:          t.Target.String(),
		SourceRows:      res.sourceRows,
		TargetRows:      res.targetRows,
		MissingInTarget: int64(len(res.diffs.missing)),
		ExtraInTarget:   int64(len(res.diffs.extra)),
		Mismatched:      int64(len(res.diffs.mismatched)),
		Samples:         res.diffs.samples(pair.keyCols, pair.colNames, opts.MaxSamples),
		TwoWay:          tw != nil,
		MissingInSource: int64(len(res.diffs.missingInSource)),
		ExtraInSource:   int64(len(res.diffs.extraInSource)),
	}
	tr.Consistent = res.diffs.count() == 0
	if opts.Repair && !tr.Consistent {
		if opts.beforeRepair != nil {
			opts.beforeRepair(ctx)
		}
		var plan *RepairPlan
		if tw != nil {
			plan, err = pair.repairTwoWay(ctx, res.diffs, opts, tw)
		} else {
			plan, err = pair.repair(ctx, res.diffs, opts)
		}
		if err != nil {
			return nil, err
		}
		tr.Plan = plan
		if !opts.DryRun {
			tr.Repaired = plan.total()
			again, err := pair.find(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("verify after repair: %w", err)
			}
			tr.Consistent = again.diffs.count() == 0
		}
	}
	tr.Duration = time.Since(start)
	pair.progress(opts, PhaseDone, max(res.sourceRows, res.targetRows), max(res.sourceRows, res.targetRows))
	return tr, nil
}

// find compares the table and, with a recheck delay, keeps only the
// differences that are still there after the delay.
func (p *pair) find(ctx context.Context, opts Options) (*result, error) {
	res, err := p.compare(ctx, opts)
	if err != nil {
		return nil, err
	}
	if opts.RecheckDelay <= 0 || res.diffs.count() == 0 {
		return res, nil
	}
	p.progress(opts, PhaseRecheck, 0, int64(res.diffs.count()))
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(opts.RecheckDelay):
	}
	res.diffs, err = p.recheck(ctx, res.diffs, opts.BatchSize)
	if err != nil {
		return nil, err
	}
	return res, nil
}
