package syncloop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunSyncsAtOnceOnKickAndRetriesFailures(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kicks := make(chan struct{}, 1)
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	var n atomic.Int32
	var failures atomic.Int32
	synced := make(chan int32, 16)
	l := Loop{MinInterval: time.Millisecond, Resync: time.Hour, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Sync: func(context.Context) error {
			i := n.Add(1)
			synced <- i
			if i == 2 {
				return errors.New("refused")
			}
			return nil
		},
		Kick: kick, Failed: func(error) { failures.Add(1) }}
	go l.Run(ctx, kicks)
	wait := func(want int32) {
		t.Helper()
		select {
		case got := <-synced:
			if got != want {
				t.Fatalf("sync %d, want %d", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no sync %d", want)
		}
	}
	wait(1) // at start, without a kick
	kick()
	wait(2) // fails
	wait(3) // the retry after back-off, without a kick
	if failures.Load() != 1 {
		t.Errorf("failures reported: %d, want 1", failures.Load())
	}
	cancel()
}
