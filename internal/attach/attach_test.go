package attach

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// socketPath is a short path (unix socket paths are limited to 108 bytes).
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "att")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

func serve(t *testing.T, fn func(context.Context, Request) error) string {
	t.Helper()
	path := socketPath(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, path, Handler(fn)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("socket not created")
	return ""
}

func TestNotify(t *testing.T) {
	pod := Request{Namespace: "x", Name: "a", UID: "u", ContainerID: "c", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00::5")}}
	var got Request
	path := serve(t, func(_ context.Context, r Request) error {
		switch r.Name {
		case "elsewhere":
			return &RejectedError{Reason: "pod x/elsewhere is bound to node n2"}
		case "slow":
			time.Sleep(300 * time.Millisecond)
			return nil
		case "failing":
			return errors.New("sync failed")
		}
		got = r
		return nil
	})
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", st.Mode(), err)
	}
	if err := Notify(path, pod, time.Second); err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "x" || got.Name != "a" || got.UID != "u" || len(got.IPs) != 2 || got.IPs[1] != pod.IPs[1] {
		t.Errorf("agent got %+v", got)
	}
	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"rejected", Request{Namespace: "x", Name: "elsewhere", IPs: pod.IPs}, "422 Unprocessable Entity: pod x/elsewhere is bound to node n2"},
		{"failed", Request{Namespace: "x", Name: "failing", IPs: pod.IPs}, "503 Service Unavailable: sync failed"},
		{"invalid", Request{Namespace: "x", IPs: pod.IPs}, "400 Bad Request: invalid attachment: namespace and name are required"},
		{"no addresses", Request{Namespace: "x", Name: "a"}, "ips is required"},
		{"timeout", Request{Namespace: "x", Name: "slow", IPs: pod.IPs}, "context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Notify(path, tc.req, 100*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Notify: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestNotifyWithoutAgent(t *testing.T) {
	err := Notify(socketPath(t), Request{Namespace: "x", Name: "a"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "report pod x/a to the agent at") {
		t.Errorf("Notify without an agent: %v", err)
	}
}

// TestServeReplacesStaleSocket: a socket a killed agent left behind does not
// keep the next one from listening.
func TestServeReplacesStaleSocket(t *testing.T) {
	path := socketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, path, Handler(func(context.Context, Request) error { return nil })) }()
	req := Request{Namespace: "x", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	var nerr error
	for i := 0; i < 50; i++ {
		if nerr = Notify(path, req, time.Second); nerr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve over a stale socket: %v", err)
	}
	if nerr != nil {
		t.Fatalf("Notify: %v", nerr)
	}
}
