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

// TestUrgentEndsThePause: with an hour-long pause, a kick alone waits; a kick
// with Urgent syncs at once.
func TestUrgentEndsThePause(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kicks := make(chan struct{}, 1)
	urgent := make(chan struct{}, 1)
	synced := make(chan struct{}, 16)
	l := Loop{MinInterval: time.Hour, Resync: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Sync:   func(context.Context) error { synced <- struct{}{}; return nil },
		Kick:   func() { kicks <- struct{}{} },
		Failed: func(error) {}, Urgent: urgent}
	go l.Run(ctx, kicks)
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("no first sync")
	}
	kicks <- struct{}{}
	select {
	case <-synced:
		t.Fatal("a kick during the pause synced before the pause ended")
	case <-time.After(50 * time.Millisecond):
	}
	urgent <- struct{}{}
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("Urgent did not end the pause")
	}
}

func TestSignalNeverBlocks(t *testing.T) {
	ch := make(chan struct{}, 1)
	Signal(ch)
	Signal(ch) // absorbed by the pending one
	if len(ch) != 1 {
		t.Fatalf("%d signals pending, want 1", len(ch))
	}
	<-ch
	Signal(ch)
	if len(ch) != 1 {
		t.Fatal("no signal after the pending one was taken")
	}
}
