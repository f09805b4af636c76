//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"amime.dev/amime/internal/proc"
)

// TestZZLabDownLeavesNothing runs last (tests run in file order): `lab down`
// removes every namespace, link, process and file of the lab.
func TestZZLabDownLeavesNothing(t *testing.T) {
	if *keep {
		t.Skip("-keep: the lab stays up")
	}
	labDir := "/var/lib/amime-lab/" + labName
	// Every process the lab started: control plane, node runtimes, pod shims and containers.
	var procs []proc.Record
	_ = filepath.WalkDir(labDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".pid") {
			if r, err := proc.ReadFile(p); err == nil && r.Alive() {
				procs = append(procs, r)
			}
		}
		return nil
	})
	if len(procs) < 7 {
		t.Fatalf("found only %d lab processes before down; expected the control plane, 3 node runtimes and pods", len(procs))
	}
	if _, err := amime(t, "lab", "down"); err != nil {
		t.Fatal(err)
	}
	for _, r := range procs {
		if r.Alive() {
			t.Errorf("process %d still runs after lab down", r.Pid)
		}
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "amime-"+labName+"-") {
			t.Errorf("network namespace left: %s", line)
		}
	}
	out, _ = exec.Command("ip", "-br", "link").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "am-"+labName) {
			t.Errorf("link left: %s", line)
		}
	}
	if _, err := os.Stat(labDir); !os.IsNotExist(err) {
		t.Errorf("lab directory %s left (err %v)", labDir, err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), labDir) {
		t.Errorf("mounts under %s left", labDir)
	}
}
