package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/proc"
)

// daemon is a long-running lab process. It runs in its own session so that it
// outlives the `lab up` command, and is found again through its pid file.
type daemon struct {
	name   string
	bin    string
	args   []string
	netns  string // empty: the root namespace
	newUTS bool
	newNS  bool
	// passMountNS hands the caller's mount namespace to the daemon as fd 3.
	passMountNS bool
	logPath     string
	pidPath     string
}

func (d daemon) running() (proc.Record, bool) {
	r, err := proc.ReadFile(d.pidPath)
	if err != nil {
		return proc.Record{}, false
	}
	return r, r.Alive()
}

func (d daemon) start() error {
	if _, ok := d.running(); ok {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(d.logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", d.name, err)
	}
	defer logf.Close()
	cmd := exec.Command(d.bin, d.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	if d.passMountNS {
		mnt, err := os.Open("/proc/self/ns/mnt")
		if err != nil {
			return fmt.Errorf("open own mount namespace: %w", err)
		}
		defer mnt.Close()
		cmd.ExtraFiles = []*os.File{mnt}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if d.newUTS {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUTS
	}
	if d.newNS {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNS
	}
	path := ""
	if d.netns != "" {
		path = netns.Path(d.netns)
	}
	if err := netns.Start(path, cmd); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	if err := proc.WriteFile(d.pidPath, cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("record pid of %s: %w", d.name, err)
	}
	// Reap the child if it dies while we still run; after we exit, init does.
	go func() { _ = cmd.Wait() }()
	return nil
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It removes the pid file.
func (d daemon) stop(grace time.Duration) error {
	r, err := proc.ReadFile(d.pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		r.Stop(grace)
	}
	if err := os.Remove(d.pidPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
