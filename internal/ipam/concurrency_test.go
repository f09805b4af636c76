package ipam

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment of the helper processes the multi-process tests run: the test
// binary itself, re-executed with -test.run=^TestHelperProcess$.
const (
	envHelper = "AMIME_IPAM_TEST_HELPER" // "allocate" or "hold"
	envDir    = "AMIME_IPAM_TEST_DIR"
	envID     = "AMIME_IPAM_TEST_ID"
)

var concurrencyRanges = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}

// TestHelperProcess is not a test: it is what the helper processes run.
func TestHelperProcess(t *testing.T) {
	dir, id := os.Getenv(envDir), os.Getenv(envID)
	switch os.Getenv(envHelper) {
	case "":
		t.Skip("run by the multi-process tests")
	case "allocate": // 20 attachments, printing "ADDR <ip>" per address
		a := newAllocator(t, dir, concurrencyRanges...)
		for i := range 20 {
			got, err := a.Allocate(att(fmt.Sprintf("%s-%d", id, i), "eth0"))
			if err != nil {
				t.Fatal(err)
			}
			for _, al := range got {
				fmt.Printf("ADDR %s\n", al.Addr)
			}
		}
	case "hold": // take the lock, say so, and wait to be killed
		if _, err := openStore(dir); err != nil {
			t.Fatal(err)
		}
		fmt.Println("LOCKED")
		time.Sleep(time.Minute)
		t.Fatal("not killed")
	}
}

func helper(t *testing.T, mode, dir, id string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envDir+"="+dir, envID+"="+id)
	cmd.Stderr = os.Stderr
	return cmd
}

// checkDistinct checks that addrs has want entries, all different, and that
// they are exactly what InUse reports.
func checkDistinct(t *testing.T, a *Allocator, addrs []netip.Addr, want int) {
	t.Helper()
	seen := map[netip.Addr]bool{}
	for _, ad := range addrs {
		if seen[ad] {
			t.Errorf("%v handed out twice", ad)
		}
		seen[ad] = true
	}
	if len(addrs) != want {
		t.Errorf("%d addresses handed out, want %d", len(addrs), want)
	}
	inUse, err := a.InUse()
	if err != nil {
		t.Fatal(err)
	}
	if len(inUse) != len(seen) {
		t.Errorf("InUse has %d entries, want %d", len(inUse), len(seen))
	}
	for _, al := range inUse {
		if !seen[al.Addr] {
			t.Errorf("InUse lists %v, which nobody got", al.Addr)
		}
	}
}

// TestConcurrentAllocators runs 50 goroutines on each of two Allocators sharing a
// data directory, as two plugin processes would: the Allocators share no memory,
// only the flock keeps them apart.
func TestConcurrentAllocators(t *testing.T) {
	dir := t.TempDir()
	allocators := []*Allocator{newAllocator(t, dir, concurrencyRanges...), newAllocator(t, dir, concurrencyRanges...)}
	var (
		mu    sync.Mutex
		addrs []netip.Addr
		wg    sync.WaitGroup
	)
	for i, a := range allocators {
		for g := range 50 {
			wg.Go(func() {
				at := att(fmt.Sprintf("a%d-g%d", i, g), "eth0")
				got, err := a.Allocate(at)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) != 2 {
					t.Errorf("%v got %v, want two addresses", at, got)
				}
				// Every third one is released and allocated again, racing with the rest.
				if g%3 == 0 {
					if err := a.Release(at); err != nil {
						t.Error(err)
						return
					}
					if got, err = a.Allocate(at); err != nil {
						t.Error(err)
						return
					}
				}
				again, err := allocators[1-i].Get(at)
				if err != nil {
					t.Error(err)
				} else if fmt.Sprint(again) != fmt.Sprint(got) {
					t.Errorf("%v: the other Allocator's Get = %v, want %v", at, again, got)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, al := range got {
					addrs = append(addrs, al.Addr)
				}
			})
		}
	}
	wg.Wait()
	checkDistinct(t, allocators[0], addrs, 2*2*50)
}

// TestMultiProcess runs four processes that each allocate 20 attachments (one
// IPv4 and one IPv6 address each) from one data directory at the same time.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	var (
		cmds []*exec.Cmd
		outs []*bytes.Buffer
	)
	for i := range 4 {
		cmd := helper(t, "allocate", dir, fmt.Sprintf("proc%d", i))
		out := new(bytes.Buffer)
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	var addrs []netip.Addr
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
		for line := range strings.Lines(outs[i].String()) {
			s, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
			if !ok {
				continue
			}
			ad, err := netip.ParseAddr(s)
			if err != nil {
				t.Fatalf("helper %d printed %q", i, line)
			}
			addrs = append(addrs, ad)
		}
	}
	checkDistinct(t, newAllocator(t, dir, concurrencyRanges...), addrs, 4*20*2)
}

// TestLockReleasedOnCrash checks that the lock excludes another process, and that
// a process killed while holding it does not block the next one.
func TestLockReleasedOnCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	cmd := helper(t, "hold", dir, "")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	locked := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "LOCKED" {
				locked <- true
				break
			}
		}
		for sc.Scan() { // drain
		}
		close(locked)
	}()
	select {
	case ok := <-locked:
		if !ok {
			t.Fatal("helper exited without taking the lock")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not take the lock")
	}

	a := newAllocator(t, dir, "10.0.0.0/24")
	type result struct {
		got []Allocation
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := a.Allocate(att("c1", "eth0"))
		done <- result{got, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Allocate returned %v, %v while another process held the lock", r.got, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := addrsOf(r.got); len(got) != 1 || got[0] != "10.0.0.2" {
			t.Errorf("Allocate = %v, want [10.0.0.2]", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Allocate still blocked after the lock holder was killed")
	}
}
