package workload

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"
)

func TestPause(t *testing.T) {
	tests := []struct {
		name       string
		flavor     pauseFlavor
		sig        syscall.Signal
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "image SIGTERM", flavor: pauseRegistry, sig: syscall.SIGTERM, wantCode: 0, wantStderr: "Shutting down, got signal: Terminated\n"},
		{name: "image SIGINT", flavor: pauseRegistry, sig: syscall.SIGINT, wantCode: 0, wantStderr: "Shutting down, got signal: Interrupt\n"},
		{name: "agnhost SIGTERM", flavor: pauseAgnhost, sig: syscall.SIGTERM, wantCode: 2, wantStdout: "Paused\nexiting 2\n"},
		{name: "agnhost SIGINT", flavor: pauseAgnhost, sig: syscall.SIGINT, wantCode: 1, wantStdout: "Paused\nexiting 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := newPauser(pauseOptions{Flavor: tt.flavor, Stdout: &stdout, Stderr: &stderr})
			r := startRun(t, p.run)
			time.Sleep(50 * time.Millisecond)
			if r.ended() {
				t.Fatal("pause returned before a signal")
			}
			r.signal(tt.sig)
			if code := r.wait(t, 5*time.Second); code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if stdout.String() != tt.wantStdout || stderr.String() != tt.wantStderr {
				t.Errorf("stdout %q stderr %q, want %q %q", stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// TestPauseWithoutSignal: a context ended otherwise counts as SIGTERM.
func TestPauseWithoutSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	if code := newPauser(pauseOptions{Stderr: &stderr}).run(ctx); code != 0 || stderr.String() != "Shutting down, got signal: Terminated\n" {
		t.Fatalf("got %d %q", code, stderr.String())
	}
}
