package netns

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// TestDoLeavesProcessNamespace: after many Do calls, some of which the
// scheduler runs on the main thread, the process (its first thread, which
// /proc/PID/ns/net names) and every other thread are still in the namespace
// they started in.
func TestDoLeavesProcessNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	name := fmt.Sprintf("amime-netns-test-%d", os.Getpid())
	if err := Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(name) })
	before, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	inside := ""
	for range 50 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := Do(Path(name), func() error {
					var err error
					inside, err = os.Readlink("/proc/thread-self/ns/net")
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	if inside == before || inside == "" {
		t.Fatalf("fn did not run in the namespace: saw %q, process is in %q", inside, before)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err == nil && ns != before {
			t.Errorf("thread %s left in %s; the process started in %s", task.Name(), ns, before)
		}
	}
	if now, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getpid())); now != before {
		t.Errorf("the process's first thread is in %s, started in %s", now, before)
	}
}
