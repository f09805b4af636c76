package ipam

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// BenchmarkBurst is a node starting many pods at once: 100 allocators (each
// with its own lock file descriptor, as separate plugin processes have)
// allocate a dual-stack pair concurrently, then release it concurrently. How
// long the data directory's lock is held per operation sets the burst's
// duration.
func BenchmarkBurst(b *testing.B) {
	const n = 100
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		allocs := make([]*Allocator, n)
		for i := range allocs {
			a, err := New(dir, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")})
			if err != nil {
				b.Fatal(err)
			}
			allocs[i] = a
		}
		b.StartTimer()
		for _, op := range []func(*Allocator, Attachment) error{
			func(a *Allocator, at Attachment) error { _, err := a.Allocate(at); return err },
			func(a *Allocator, at Attachment) error { return a.Release(at) },
		} {
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i, a := range allocs {
				wg.Go(func() {
					if err := op(a, Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		}
	}
}
