package proc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOfSelf(t *testing.T) {
	r, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if r.Pid != os.Getpid() || r.Start == 0 {
		t.Errorf("Of(self) = %+v", r)
	}
	if !r.Alive() {
		t.Error("this process is not alive")
	}
	again, err := Of(os.Getpid())
	if err != nil || again != r {
		t.Errorf("Of(self) twice = %+v, %+v (%v)", r, again, err)
	}
}

func TestAliveRejectsOtherProcesses(t *testing.T) {
	self, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		r    Record
	}{
		{"wrong start time (recycled PID)", Record{Pid: self.Pid, Start: self.Start + 1}},
		{"start time zero", Record{Pid: self.Pid, Start: 0}},
		{"zero PID", Record{Pid: 0, Start: self.Start}},
		{"negative PID", Record{Pid: -1, Start: self.Start}},
		{"zero record", Record{}},
		{"PID that does not exist", Record{Pid: 1 << 30, Start: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.r.Alive() {
				t.Errorf("%+v is alive", tt.r)
			}
			// Signalling a record that is not alive is a no-op, never a kill of
			// whatever process now has the PID.
			if err := tt.r.Signal(syscall.SIGKILL); err != nil {
				t.Errorf("Signal = %v", err)
			}
			if err := tt.r.SignalGroup(syscall.SIGKILL); err != nil {
				t.Errorf("SignalGroup = %v", err)
			}
			if !tt.r.WaitGone(time.Millisecond) {
				t.Error("WaitGone = false")
			}
		})
	}
	if !self.Alive() {
		t.Fatal("this process was signalled")
	}
}

func TestOfMissingProcess(t *testing.T) {
	if _, err := Of(1 << 30); err == nil {
		t.Error("Of(nonexistent PID) succeeded")
	}
}

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "x.pid")
	if err := WriteFile(path, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := Of(os.Getpid())
	if want := fmt.Sprintf("%d %d\n", self.Pid, self.Start); string(b) != want {
		t.Errorf("pid file = %q, want %q", b, want)
	}
	r, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if r != self {
		t.Errorf("ReadFile = %+v, want %+v", r, self)
	}
	if !r.Alive() {
		t.Error("record read back is not alive")
	}
}

func TestWriteFileMissingProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	if err := WriteFile(path, 1<<30); err == nil {
		t.Fatal("WriteFile for a nonexistent PID succeeded")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pid file written anyway: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    Record
		wantErr bool
	}{
		{name: "normal", content: "1234 5678\n", want: Record{Pid: 1234, Start: 5678}},
		{name: "no newline", content: "1 2", want: Record{Pid: 1, Start: 2}},
		{name: "extra fields ignored", content: "1 2 3\n", want: Record{Pid: 1, Start: 2}},
		{name: "empty", content: "", wantErr: true},
		{name: "pid only", content: "1234\n", wantErr: true},
		{name: "not numbers", content: "abc def\n", wantErr: true},
		{name: "negative start", content: "12 -5\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.pid")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := ReadFile(path)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ReadFile(%q) = %+v, want an error", tt.content, r)
				}
				if !strings.Contains(err.Error(), "malformed pid file") || !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file and the problem", err)
				}
				if r != (Record{}) {
					t.Errorf("ReadFile returned %+v with the error", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r != tt.want {
				t.Errorf("ReadFile(%q) = %+v, want %+v", tt.content, r, tt.want)
			}
		})
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.pid")); !os.IsNotExist(err) {
		t.Errorf("ReadFile(missing) = %v, want a not-exist error", err)
	}
}

// startSleep starts a child that sleeps long enough to outlive the test.
func startSleep(t *testing.T, setpgid bool) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep on this host")
	}
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: setpgid}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestChildLifecycle(t *testing.T) {
	cmd := startSleep(t, false)
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	if err := WriteFile(pidFile, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	r, err := ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pid != cmd.Process.Pid || !r.Alive() {
		t.Fatalf("record %+v of a running child is not alive", r)
	}
	if err := r.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Killed but not yet reaped, the child is a zombie: not alive.
	if !r.WaitGone(5 * time.Second) {
		t.Fatal("killed child still alive (zombie counted as alive?)")
	}
	if err := cmd.Wait(); err == nil {
		t.Error("killed child exited cleanly")
	}
	if r.Alive() {
		t.Error("reaped child is alive")
	}
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal to a gone process = %v", err)
	}
}

func TestStop(t *testing.T) {
	cmd := startSleep(t, true)
	r, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.Stop(5 * time.Second) // sleep ends on SIGTERM
	if r.Alive() {
		t.Fatal("process alive after Stop")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Stop took %v for a process that ends on SIGTERM", d)
	}
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("Wait = %v, want an exit error", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("child ended with %v, want SIGTERM", ws)
	}
}

func TestStopKillsGroupAfterGrace(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this host")
	}
	// A leader that ignores SIGTERM: Stop must SIGKILL its group after the grace period.
	cmd := exec.Command(sh, "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("child not ready: %q %v", buf, err)
	}
	r, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.Stop(300 * time.Millisecond)
	if r.Alive() {
		t.Fatal("process alive after Stop")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before the grace period", d)
	}
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("Wait = %v, want an exit error", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("child ended with %v, want SIGKILL", ws)
	}
}

func TestStatCommandNameWithParentheses(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep on this host")
	}
	// The command name in /proc/PID/stat may contain spaces and ')': fields are
	// read after the last ')'.
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Skip(err)
	}
	odd := filepath.Join(t.TempDir(), "a) b (c")
	if err := os.WriteFile(odd, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run a copied binary here (noexec temp dir?): %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stat), "(a) b (c)") {
		t.Skipf("command name not as expected in %q", stat)
	}
	r, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Misreading the fields after the first ')' would shift them by two and
	// yield something other than a start time just after this process's.
	self, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if r.Start < self.Start || r.Start > self.Start+100*60*10 {
		t.Errorf("start = %d, want a time shortly after this process's %d", r.Start, self.Start)
	}
	if !r.Alive() {
		t.Error("process with an odd name not alive")
	}
}
