package toggles

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/strangler-fig/strangler/internal/ramp"
)

// RampState returns the ramp state kept in the fleet store, for
// ramp.Options.State; nil for a flags file (the ramp then keeps its state
// in a file beside it).
func (fl Fleet) RampState() ramp.StateStore { return fleetRampState{fl.f} }

type fleetRampState struct{ f *fleet }

// UpdateState implements ramp.StateStore: the state row is locked for the
// transaction, so one replica at a time decides a step.
func (r fleetRampState) UpdateState(ctx context.Context, fn func(map[string]*ramp.FlagState)) error {
	ctx, cancel := context.WithTimeout(ctx, r.f.opts.Timeout)
	defer cancel()
	if err := r.f.setup(ctx); err != nil {
		return fmt.Errorf("ramp state: %w", err)
	}
	tx, err := r.f.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("ramp state: %w: %w", ErrStoreUnavailable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var raw []byte
	if err := tx.QueryRow(ctx, `SELECT state FROM strangler_flags.ramp_state WHERE id = 1 FOR UPDATE`).Scan(&raw); err != nil {
		return fmt.Errorf("ramp state: %w: %w", ErrStoreUnavailable, err)
	}
	m := map[string]*ramp.FlagState{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("ramp state in the store is invalid: %w", err)
	}
	if m == nil {
		m = map[string]*ramp.FlagState{}
	}
	before, _ := json.Marshal(m)
	fn(m)
	after, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode ramp state: %w", err)
	}
	if string(after) == string(before) {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE strangler_flags.ramp_state SET state = $1 WHERE id = 1`, string(after)); err != nil {
		return fmt.Errorf("ramp state: %w: %w", ErrStoreUnavailable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("ramp state: %w: %w", ErrStoreUnavailable, err)
	}
	return nil
}

// ReadState implements ramp.StateStore.
func (r fleetRampState) ReadState(ctx context.Context) (map[string]*ramp.FlagState, error) {
	ctx, cancel := context.WithTimeout(ctx, r.f.opts.Timeout)
	defer cancel()
	var raw []byte
	if err := r.f.pool.QueryRow(ctx, `SELECT state FROM strangler_flags.ramp_state WHERE id = 1`).Scan(&raw); err != nil {
		return nil, fmt.Errorf("ramp state: %w: %w", ErrStoreUnavailable, err)
	}
	m := map[string]*ramp.FlagState{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("ramp state in the store is invalid: %w", err)
	}
	if m == nil {
		m = map[string]*ramp.FlagState{}
	}
	return m, nil
}
