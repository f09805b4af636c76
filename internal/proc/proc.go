// Package proc identifies processes across restarts of the program that started
// them: a pid file records the PID and the process start time, so that a recycled
// PID is never mistaken for (or signalled as) the original process.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"amime.dev/amime/internal/atomicfile"
)

// Record identifies one process.
type Record struct {
	Pid   int
	Start uint64 // start time in clock ticks since boot (/proc/PID/stat field 22)
}

// stat returns the state letter and start time of pid.
func stat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	// The command name may hold spaces and parentheses: fields follow the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// Of returns the record of a running process.
func Of(pid int) (Record, error) {
	_, st, err := stat(pid)
	if err != nil {
		return Record{}, err
	}
	return Record{Pid: pid, Start: st}, nil
}

// Alive reports whether the recorded process still runs (a zombie does not).
func (r Record) Alive() bool {
	if r.Pid <= 0 {
		return false
	}
	state, st, err := stat(r.Pid)
	return err == nil && st == r.Start && state != 'Z'
}

// Signal signals the recorded process if it is still the same process.
func (r Record) Signal(sig syscall.Signal) error {
	if !r.Alive() {
		return nil
	}
	return syscall.Kill(r.Pid, sig)
}

// SignalGroup signals the process group the recorded process leads.
func (r Record) SignalGroup(sig syscall.Signal) error {
	if !r.Alive() {
		return nil
	}
	return syscall.Kill(-r.Pid, sig)
}

// WaitGone waits until the process has ended or the timeout passes.
func (r Record) WaitGone(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for r.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Stop sends SIGTERM to the process, waits up to grace, then SIGKILLs its group.
func (r Record) Stop(grace time.Duration) {
	_ = r.Signal(syscall.SIGTERM)
	if r.WaitGone(grace) {
		return
	}
	_ = r.SignalGroup(syscall.SIGKILL)
	_ = r.Signal(syscall.SIGKILL)
	r.WaitGone(2 * time.Second)
}

// WriteFile records pid in a pid file.
func WriteFile(path string, pid int) error {
	r, err := Of(pid)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, []byte(fmt.Sprintf("%d %d\n", r.Pid, r.Start)), 0o644)
}

// ReadFile reads a pid file.
func ReadFile(path string) (Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Record{}, err
	}
	var r Record
	if _, err := fmt.Sscanf(string(b), "%d %d", &r.Pid, &r.Start); err != nil {
		return Record{}, fmt.Errorf("%s: malformed pid file: %w", path, err)
	}
	return r, nil
}

// ErrNotRunning is returned for a pid file whose process has ended.
var ErrNotRunning = errors.New("process not running")
