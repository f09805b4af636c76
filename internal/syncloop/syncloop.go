// Package syncloop is the loop every controller of the agent runs: sync on a
// kick (an informer event), at most every MinInterval, at least every Resync,
// and after a failure again with exponential back-off. Syncs compute the whole
// desired state, so kicks that arrive during a sync collapse into one.
package syncloop

import (
	"context"
	"time"
)

// Loop paces the syncs of one controller.
type Loop struct {
	MinInterval time.Duration // pause after each sync
	Resync      time.Duration // sync at least this often
	// MinBackoff and MaxBackoff bound the wait before a failed sync is retried.
	MinBackoff, MaxBackoff time.Duration
	// Sync computes and applies the desired state.
	Sync func(context.Context) error
	// Kick asks for a sync (a pending one absorbs the others); Failed is told
	// each error before the retry is scheduled.
	Kick   func()
	Failed func(error)
	// Urgent, when set, ends the pause after a sync early: for a caller that
	// waits for the next sync (a CNI ADD waiting for its pod's policies),
	// not for informer events, which the pause batches.
	Urgent <-chan struct{}
}

// Run syncs once at once, then as kicked through kicks, until ctx ends.
func (l Loop) Run(ctx context.Context, kicks <-chan struct{}) {
	t := time.NewTicker(l.Resync)
	defer t.Stop()
	backoff := time.Duration(0)
	l.Kick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kicks:
		case <-t.C:
		}
		if err := l.Sync(ctx); err != nil {
			l.Failed(err)
			backoff = min(max(2*backoff, l.MinBackoff), l.MaxBackoff)
			time.AfterFunc(backoff, l.Kick)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.MinInterval):
		case <-l.Urgent:
		}
	}
}

// Signal sends on ch without blocking: a signal already pending absorbs this
// one (ch has a buffer of one).
func Signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
