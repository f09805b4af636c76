// Package netns runs work inside Linux network namespaces.
//
// A network namespace belongs to an OS thread, not to a Go process, so every helper
// here locks a throwaway goroutine to its thread, switches that thread, and switches
// it back before unlocking it. A thread that cannot be switched back stays locked
// and ends with the goroutine. Leaving the thread switched is not an option even
// then for the main thread: the Go runtime never ends the process's first thread,
// it parks it, and /proc/PID/ns/net (what nsenter --target and every tool that
// inspects a process reads) is that thread's namespace.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on a thread that is inside the network namespace at path.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(path); err != nil {
			// setns failed: the thread is where it was.
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked and ends with this goroutine; fn's
		// work was done, so its result is still the answer.
		errc <- err
	}()
	return <-errc
}

// Start starts cmd inside the network namespace at path. The child inherits the
// namespace of the thread that forks it; other namespaces (mount, UTS) can be
// requested through cmd.SysProcAttr.Cloneflags as usual.
func Start(path string, cmd *exec.Cmd) error {
	if path == "" {
		return cmd.Start()
	}
	return Do(path, cmd.Start)
}

func enter(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return nil
}

// Path is where iproute2 (and this project) pins named network namespaces.
func Path(name string) string { return "/run/netns/" + name }

// Exists reports whether the named namespace is pinned.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// ipCmd runs ip(8), in the mount namespace mountNS (an open nsfs file) when it
// is set: a process in a private mount namespace pins network namespaces in the
// machine's, so that they are visible (and removable) there.
func ipCmd(mountNS *os.File, args ...string) *exec.Cmd {
	if mountNS == nil {
		return exec.Command("ip", args...)
	}
	cmd := exec.Command("nsenter", append([]string{"--mount=/proc/self/fd/3", "--", "ip"}, args...)...)
	cmd.ExtraFiles = []*os.File{mountNS}
	return cmd
}

// Add creates a named network namespace with loopback up; it is a no-op if the
// namespace exists.
func Add(name string) error { return AddIn(nil, name) }

// AddIn is Add with the pin created in the mount namespace at mountNS.
func AddIn(mountNS *os.File, name string) error {
	if Exists(name) {
		return nil
	}
	if out, err := ipCmd(mountNS, "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("bring up loopback in %s: %v: %s", name, err, out)
	}
	return nil
}

// Delete removes a named network namespace; it is a no-op if it is gone already.
func Delete(name string) error { return DeleteIn(nil, name) }

// DeleteIn is Delete with the pin removed in the mount namespace at mountNS.
func DeleteIn(mountNS *os.File, name string) error {
	if !Exists(name) {
		return nil
	}
	if out, err := ipCmd(mountNS, "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", name, err, out)
	}
	return nil
}

// List returns the names of all pinned network namespaces.
func List() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

// Sysctl writes a sysctl inside the namespace at path (empty path: the caller's).
// /proc/sys/net resolves against the namespace of the thread that opens it.
func Sysctl(path, key, value string) error {
	write := func() error {
		f := "/proc/sys/" + replaceDots(key)
		if err := os.WriteFile(f, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	}
	if path == "" {
		return write()
	}
	return Do(path, write)
}

func replaceDots(key string) string {
	b := []byte(key)
	for i, c := range b {
		if c == '.' {
			b[i] = '/'
		}
	}
	return string(b)
}
