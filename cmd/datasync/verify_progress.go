package main

import (
	"sync"

	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/progress"
	"github.com/strangler-fig/strangler/internal/reconcile"
)

// verifyProgress shows verify's progress through internal/progress: a bar on
// a terminal, JSON lines otherwise, one Reporter per table. Rows count as
// done when their range's checksums matched or the range was compared row by
// row; rechecks and repairs do not move the bar.
type verifyProgress struct {
	io *cli.IO

	mu   sync.Mutex
	rep  *progress.Reporter
	name string
	done int64
}

func newVerifyProgress(io *cli.IO) *verifyProgress { return &verifyProgress{io: io} }

// update is a reconcile.Options.Progress callback.
func (v *verifyProgress) update(p reconcile.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.Table != v.name {
		v.finishLocked()
		v.name = p.Table
		v.rep = progress.New(progress.Options{Out: v.io.ErrOut, Terminal: v.io.ErrIsTerminal, Label: p.Table, Total: p.Total})
		v.rep.Start()
	}
	switch p.Phase {
	case reconcile.PhaseScan, reconcile.PhaseBisect:
		v.rep.SetTotal(p.Total)
		if p.Done > v.done {
			v.rep.Add(p.Done - v.done)
			v.done = p.Done
		}
	case reconcile.PhaseDone:
		v.finishLocked()
	}
}

// finish ends the current table's Reporter, if any.
func (v *verifyProgress) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.finishLocked()
}

func (v *verifyProgress) finishLocked() {
	if v.rep != nil {
		v.rep.Finish()
	}
	v.rep, v.name, v.done = nil, "", 0
}
