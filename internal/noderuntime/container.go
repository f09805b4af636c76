package noderuntime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"amime.dev/amime/internal/netns"
	"amime.dev/amime/internal/proc"
)

// containerState is the node runtime's view of one container of a pod.
type containerState struct {
	name string
	init bool
	dir  string

	mu sync.Mutex
	// persisted in state.json
	RestartCount int32         `json:"restartCount"`
	Backoff      time.Duration `json:"backoff"`
	ImageRef     string        `json:"imageRef"`

	shim      proc.Record
	startedAt time.Time
	running   bool
	lastExit  *exitState // the most recent termination
	prevExit  *exitState // the one before (lastState after a restart)
	waiting   string     // waiting reason when not running
	waitMsg   string
	nextStart time.Time // back-off: no start before this

	// probe results
	ready           bool
	started         bool // startup probe passed (or none)
	livenessFailure string
	probes          *probeSet
}

func (c *containerState) statePath() string { return filepath.Join(c.dir, "state.json") }
func (c *containerState) exitPath() string  { return filepath.Join(c.dir, "exit.json") }
func (c *containerState) shimPidPath() string {
	return filepath.Join(c.dir, "shim.pid")
}
func (c *containerState) containerPidPath() string { return filepath.Join(c.dir, "container.pid") }
func (c *containerState) logPath(restart int32) string {
	return filepath.Join(c.dir, fmt.Sprintf("%d.log", restart))
}

// load restores the container from disk (node runtime restart).
func (c *containerState) load() {
	_ = readJSON(c.statePath(), c)
	if r, err := proc.ReadFile(c.shimPidPath()); err == nil {
		c.shim = r
		c.running = r.Alive()
		if st, err := os.Stat(c.shimPidPath()); err == nil {
			c.startedAt = st.ModTime()
		}
	}
	var ex exitState
	if err := readJSON(c.exitPath(), &ex); err == nil {
		c.running = false
		c.lastExit = &ex
	}
	var prev exitState
	if err := readJSON(filepath.Join(c.dir, "prev-exit.json"), &prev); err == nil {
		c.prevExit = &prev
	}
}

func (c *containerState) save() error { return writeJSON(c.statePath(), c) }

// containerPid returns the container's main process, once the shim started it.
func (c *containerState) containerPid() (proc.Record, bool) {
	r, err := proc.ReadFile(c.containerPidPath())
	if err != nil || !r.Alive() {
		return proc.Record{}, false
	}
	return r, true
}

// start launches the shim for this container: in the pod's network namespace (or
// the node's for hostNetwork pods), in new mount and UTS namespaces, in a session
// of its own so that it outlives the node runtime.
func (c *containerState) start(bin string, spec *shimSpec, podNetns string, ownUTS bool, onExit func()) error {
	if c.lastExit != nil {
		c.prevExit = c.lastExit
		_ = writeJSON(filepath.Join(c.dir, "prev-exit.json"), c.prevExit)
	}
	for _, f := range []string{c.exitPath(), c.containerPidPath(), c.shimPidPath()} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	spec.LogPath = c.logPath(c.RestartCount)
	if err := writeJSON(filepath.Join(c.dir, "spec.json"), spec); err != nil {
		return err
	}
	cmd := exec.Command(bin, "shim", "--dir", c.dir)
	cmd.Dir = "/"
	logf, err := os.OpenFile(filepath.Join(c.dir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	flags := uintptr(syscall.CLONE_NEWNS)
	if ownUTS {
		flags |= syscall.CLONE_NEWUTS
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: flags}
	path := ""
	if podNetns != "" {
		path = netns.Path(podNetns)
	}
	if err := netns.Start(path, cmd); err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	if err := proc.WriteFile(c.shimPidPath(), cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	c.shim, _ = proc.Of(cmd.Process.Pid)
	c.running = true
	c.startedAt = time.Now()
	c.lastExit = nil
	c.waiting, c.waitMsg = "", ""
	c.ready = false
	c.livenessFailure = ""
	go func() {
		_ = cmd.Wait()
		onExit()
	}()
	return c.save()
}

// poll updates running/lastExit from the shim's files.
func (c *containerState) poll() (exited bool) {
	if !c.running {
		return false
	}
	var ex exitState
	if err := readJSON(c.exitPath(), &ex); err == nil {
		c.running = false
		c.lastExit = &ex
		return true
	}
	if !c.shim.Alive() {
		// The shim died without recording an exit (killed): report it as an error.
		ex = exitState{ExitCode: 137, Signal: "killed", StartedAt: c.startedAt, FinishedAt: time.Now(), Error: "container shim ended without recording an exit status"}
		_ = writeJSON(c.exitPath(), &ex)
		c.running = false
		c.lastExit = &ex
		return true
	}
	return false
}

// kill stops the container: SIGTERM to its main process, then after grace SIGKILL
// to the whole process group the shim leads.
func (c *containerState) kill(grace time.Duration) {
	if r, ok := c.containerPid(); ok {
		_ = r.Signal(syscall.SIGTERM)
		if !r.WaitGone(grace) {
			_ = c.shim.SignalGroup(syscall.SIGKILL)
		}
	} else {
		_ = c.shim.SignalGroup(syscall.SIGKILL)
	}
	c.shim.WaitGone(5 * time.Second)
}
