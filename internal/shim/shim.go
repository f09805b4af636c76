package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/atomicfile"
	"amime.dev/amime/internal/proc"
)

// Package shim is the first process of every lab container. It is built into
// the small amime-pod binary (standard library only), so that each container
// costs a few megabytes, not the agent's footprint.
//
// Run is the first process of a container. The node runtime starts it in the
// pod's network namespace and in fresh mount and UTS namespaces; the shim then
// makes its mounts private to the container, sets the hostname, bind-mounts the
// kubelet-managed files and volumes, starts the container's process, forwards
// SIGTERM to it, and records its exit status in exit.json. Because the shim, not
// the node runtime, waits for the process, a node runtime restart loses nothing.
func Run(dir string) int {
	var spec Spec
	if err := ReadJSON(filepath.Join(dir, "spec.json"), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 1
	}
	started := time.Now()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "shim:", err)
		ex := Exit{ExitCode: 128, StartedAt: started, FinishedAt: time.Now(), Error: err.Error()}
		_ = WriteJSON(filepath.Join(dir, "exit.json"), &ex)
		return 1
	}
	if err := setupMounts(&spec); err != nil {
		return fail(err)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fail(fmt.Errorf("set hostname: %w", err))
		}
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The container reads no stdin (as `stdin: false` in a real runtime).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "amime lab: failed to start %q: %v\n", spec.Argv[0], err)
		return fail(fmt.Errorf("start %q: %w", spec.Argv[0], err))
	}
	started = time.Now()
	_ = proc.WriteFile(filepath.Join(dir, "container.pid"), cmd.Process.Pid)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	ex := Exit{StartedAt: started, FinishedAt: time.Now()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ex.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex.ExitCode = 128 + int(ws.Signal())
			ex.Signal = ws.Signal().String()
		}
	} else if err != nil {
		ex.ExitCode, ex.Error = 128, err.Error()
	}
	if err := WriteJSON(filepath.Join(dir, "exit.json"), &ex); err != nil {
		fmt.Fprintln(os.Stderr, "shim: record exit:", err)
		return 1
	}
	return 0
}

// setupMounts runs in the container's own mount namespace.
func setupMounts(spec *Spec) error {
	// Nothing mounted here may propagate back to the node.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if spec.Hostname != "" {
		// A sysfs that shows the pod's own network namespace, as `ip netns exec` does.
		if err := unix.Unmount("/sys", unix.MNT_DETACH); err == nil {
			_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
		}
	}
	for _, m := range spec.Mounts {
		target, err := EnsureTarget(m, spec.CreatedLog)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("make %s read-only: %w", m.Target, err)
			}
		}
	}
	return nil
}

// EnsureTarget makes sure the mount point exists. Pods share the machine's file
// system, so a missing mount point is created on it and recorded in createdLog for
// `lab down` to remove.
func EnsureTarget(m Mount, createdLog string) (string, error) {
	target := m.Target
	if resolved, err := filepath.EvalSymlinks(target); err == nil {
		return resolved, nil
	}
	// Find the first missing ancestor: that is what `lab down` removes.
	first := target
	for p := target; p != "/" && p != "."; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		first = p
	}
	var err error
	if m.File {
		if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
				f.Close()
			}
		}
	} else {
		err = os.MkdirAll(target, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("create mount point %s: %w", target, err)
	}
	if createdLog != "" {
		if f, err := os.OpenFile(createdLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintln(f, strings.TrimSpace(first))
			f.Close()
		}
	}
	return target, nil
}

// Spec is what the shim runs in a container's namespaces (spec.json).
type Spec struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Dir      string   `json:"dir,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	Mounts   []Mount  `json:"mounts,omitempty"`
	LogPath  string   `json:"logPath"`
	// CreatedLog records mount points the shim had to create on the machine.
	CreatedLog string `json:"createdLog,omitempty"`
}

// Mount is one bind mount into the container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	File     bool   `json:"file,omitempty"`
}

// Exit is written by the shim to exit.json when the container process ends.
type Exit struct {
	ExitCode   int       `json:"exitCode"`
	Signal     string    `json:"signal,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	Error      string    `json:"error,omitempty"`
}

// WriteJSON writes v to path atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o644)
}

// ReadJSON reads path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
