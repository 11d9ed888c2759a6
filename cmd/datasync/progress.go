package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/reconcile"
)

// progressBar draws verify's progress on a terminal; elsewhere it stays
// silent, since the summary and the report say everything.
type progressBar struct {
	io    *cli.IO
	mu    sync.Mutex
	last  time.Time
	shown bool
}

func newProgressBar(io *cli.IO) *progressBar { return &progressBar{io: io} }

const barWidth = 30

func (b *progressBar) update(p reconcile.Progress) {
	if !b.io.ErrIsTerminal {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.last) < 100*time.Millisecond && p.Phase != reconcile.PhaseDone {
		return
	}
	b.last = time.Now()
	frac := 0.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	fill := int(frac * barWidth)
	fmt.Fprintf(b.io.ErrOut, "\r\033[K%s %-7s [%s%s] %3.0f%% %d/%d rows",
		p.Table, p.Phase, strings.Repeat("=", fill), strings.Repeat(" ", barWidth-fill), frac*100, p.Done, p.Total)
	b.shown = true
}

func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shown {
		fmt.Fprint(b.io.ErrOut, "\r\033[K")
	}
}
