package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"amime.dev/amime/internal/proc"
)

// Down removes every process, namespace, link, mount and file the lab made. It is
// safe to run on a lab that is half up, already down, or crashed.
func (l *Lab) Down() error {
	var errs []error
	// Node runtimes first, so that nothing restarts pods while they are being killed.
	for i := 1; i <= l.Nodes; i++ {
		if err := l.nodeDaemon(i).stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := killPodProcesses(l.path("nodes")); err != nil {
		errs = append(errs, err)
	}
	ds := l.daemons()
	for i := len(ds) - 1; i >= 0; i-- {
		if err := ds[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := teardownUnderlay(l.Config); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(l.Dir()); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(l.Dir()); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", l.Dir(), err))
		}
		// The last lab down removes the mount points the labs created on the
		// machine, and the state root.
		if lastLab(l.StateRoot) {
			log := filepath.Join(l.StateRoot, "created-paths")
			if err := removeCreatedPaths([]string{log}); err != nil {
				errs = append(errs, err)
			}
			_ = os.Remove(log)
			_ = os.Remove(l.StateRoot)
		}
	}
	return errors.Join(errs...)
}

// killPodProcesses ends every container process recorded by the node runtimes. The
// node runtime writes one pid file per container shim (see internal/noderuntime),
// each in its own process group with the container.
func killPodProcesses(nodesDir string) error {
	var recs []proc.Record
	err := filepath.WalkDir(nodesDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && (d.Name() == "shim.pid" || d.Name() == "container.pid") {
			if r, err := proc.ReadFile(path); err == nil {
				recs = append(recs, r)
			}
		}
		return nil
	})
	for _, r := range recs {
		// The shim leads the process group of its container.
		_ = r.SignalGroup(syscall.SIGKILL)
		_ = r.Signal(syscall.SIGKILL)
	}
	for _, r := range recs {
		r.WaitGone(5 * time.Second)
	}
	return err
}

// unmountUnder lazily unmounts anything still mounted below dir (deepest first).
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	var errs []error
	for _, m := range mounts {
		if out, err := exec.Command("umount", "-l", m).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %v: %s", m, err, out))
		}
	}
	return errors.Join(errs...)
}

// lastLab reports whether no lab directory is left under the state root.
func lastLab(stateRoot string) bool {
	entries, err := os.ReadDir(stateRoot)
	if err != nil {
		return true
	}
	for _, e := range entries {
		if e.IsDir() {
			return false
		}
	}
	return true
}

// removeCreatedPaths removes the mount points the node runtimes and pods had to
// create on the machine (recorded in the logs): empty directories and empty
// files only, so nothing that was written there since is lost.
func removeCreatedPaths(logs []string) error {
	seen := map[string]bool{}
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, p := range strings.Split(string(b), "\n") {
			if p = strings.TrimSpace(p); p != "" && filepath.IsAbs(p) && p != "/" {
				seen[filepath.Clean(p)] = true
			}
		}
	}
	var errs []error
	for top := range seen {
		var paths []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil {
				paths = append(paths, p)
			}
			return nil
		})
		// Deepest first, so that directories are empty when their turn comes.
		sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
		for _, p := range paths {
			st, err := os.Lstat(p)
			if err != nil || (!st.IsDir() && st.Size() > 0) {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
