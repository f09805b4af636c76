package workload

import (
	"context"
	"fmt"
	"io"
	"syscall"
)

// pause waits, without using the CPU, until it is told to stop. Two images are
// covered, and they end differently:
//
//   - registry.k8s.io/pause ("pause"): on SIGINT or SIGTERM prints
//     "Shutting down, got signal: <description>" on stderr and exits 0;
//   - agnhost pause ("agnhost pause"): prints "Paused" on start, and on a
//     signal "exiting <code>", exiting 1 for SIGINT and 2 for SIGTERM.

type pauseFlavor int

const (
	pauseRegistry pauseFlavor = iota
	pauseAgnhost
)

type pauseOptions struct {
	Flavor pauseFlavor
	Stdout io.Writer
	Stderr io.Writer
}

type pauser struct{ opts pauseOptions }

func newPauser(o pauseOptions) *pauser {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	return &pauser{opts: o}
}

// run blocks until ctx ends and returns the exit code for the signal that
// ended it (see signalOf); without one it counts as SIGTERM.
func (p *pauser) run(ctx context.Context) int {
	if p.opts.Flavor == pauseAgnhost {
		fmt.Fprintln(p.opts.Stdout, "Paused")
	}
	<-ctx.Done()
	sig, _ := signalOf(ctx).(syscall.Signal)
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if p.opts.Flavor == pauseAgnhost {
		code := 0
		switch sig {
		case syscall.SIGINT:
			code = 1
		case syscall.SIGTERM:
			code = 2
		}
		fmt.Fprintf(p.opts.Stdout, "exiting %d\n", code)
		return code
	}
	fmt.Fprintf(p.opts.Stderr, "Shutting down, got signal: %s\n", signalDescription(sig))
	return 0
}

// signalDescription is the C library's description of a signal, as psignal(3)
// prints it.
func signalDescription(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "Interrupt"
	case syscall.SIGTERM:
		return "Terminated"
	}
	return s.String()
}

// runPause is registry.k8s.io/pause, which ignores its arguments.
func runPause(ctx context.Context, _ string, _ []string, o *cmdIO) int {
	return newPauser(pauseOptions{Flavor: pauseRegistry, Stdout: o.stdout, Stderr: o.stderr}).run(ctx)
}

// runAgnhostPause is "agnhost pause", which takes no arguments.
func runAgnhostPause(ctx context.Context, name string, args []string, o *cmdIO) int {
	fs := newFlagSet(name, o)
	positional, err := parseArgs(fs, args)
	if err == nil && len(positional) > 0 {
		err = usageErrorf("unexpected arguments: %q", positional)
	}
	if err != nil {
		return argsExit(o, name, err)
	}
	return newPauser(pauseOptions{Flavor: pauseAgnhost, Stdout: o.stdout, Stderr: o.stderr}).run(ctx)
}
