package workload

import (
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startServeHostname(t *testing.T, o serveHostnameOptions) (*serveHostnameServer, *running) {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Hostname == "" {
		o.Hostname = "sh-pod"
	}
	s, err := newServeHostnameServer(o)
	if err != nil {
		t.Fatalf("newServeHostnameServer: %v", err)
	}
	return s, startRun(t, s.run)
}

func readTCP(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c) // the server closes after answering
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func askUDP(t *testing.T, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}

func TestServeHostnameHTTP(t *testing.T) {
	tests := []struct {
		name      string
		close     bool
		target    string
		wantClose bool
	}{
		{name: "root", target: "/"},
		{name: "any path", target: "/some/path?x=1"},
		{name: "close", close: true, target: "/", wantClose: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := startServeHostname(t, serveHostnameOptions{HTTP: true, Close: tt.close})
			r := get(t, s.tcpAddr().String(), tt.target)
			if r.status != 200 || r.body != "sh-pod" {
				t.Fatalf("GET %s = %d %q, want 200 %q", tt.target, r.status, r.body, "sh-pod")
			}
			if got := r.close; got != tt.wantClose {
				t.Fatalf("Connection: close = %v, want %v", got, tt.wantClose)
			}
		})
	}
}

func TestServeHostnameTCPAndUDP(t *testing.T) {
	s, _ := startServeHostname(t, serveHostnameOptions{TCP: true, UDP: true})
	if portOf(s.tcpAddr()) != portOf(s.udpAddr()) {
		t.Fatalf("TCP port %d and UDP port %d differ", portOf(s.tcpAddr()), portOf(s.udpAddr()))
	}
	for i := 0; i < 2; i++ {
		if got := readTCP(t, s.tcpAddr().String()); got != "sh-pod" {
			t.Fatalf("TCP answer %q, want %q", got, "sh-pod")
		}
	}
	for _, msg := range []string{"x", "hostname", strings.Repeat("long datagram ", 10)} {
		if got := askUDP(t, s.udpAddr().String(), msg); got != "sh-pod" {
			t.Fatalf("UDP answer to %q: %q, want %q", msg, got, "sh-pod")
		}
	}
}

func TestServeHostnameUDPOnly(t *testing.T) {
	s, _ := startServeHostname(t, serveHostnameOptions{UDP: true})
	if s.tcpAddr() != nil {
		t.Fatal("TCP served without --tcp")
	}
	if got := askUDP(t, s.udpAddr().String(), "x"); got != "sh-pod" {
		t.Fatalf("UDP answer %q", got)
	}
}

func TestServeHostnameModes(t *testing.T) {
	tests := []struct {
		name    string
		opts    serveHostnameOptions
		wantErr string
	}{
		{name: "http and tcp", opts: serveHostnameOptions{HTTP: true, TCP: true}, wantErr: "can't serve TCP/UDP mode and HTTP mode at the same time"},
		{name: "http and udp", opts: serveHostnameOptions{HTTP: true, UDP: true}, wantErr: "can't serve TCP/UDP mode and HTTP mode at the same time"},
		{name: "nothing", opts: serveHostnameOptions{}},
	}
	for _, tt := range tests {
		tt.opts.Addr = "127.0.0.1:0"
		s, err := newServeHostnameServer(tt.opts)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if s.tcpAddr() != nil || s.udpAddr() != nil {
				t.Errorf("%s: listening without a mode", tt.name)
			}
			continue
		}
		if err == nil || err.Error() != tt.wantErr {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

// TestServeHostnameLinger: after SIGTERM it keeps answering for the linger
// time, as agnhost's "Awaiting pod deletion", then exits 0.
func TestServeHostnameLinger(t *testing.T) {
	const linger = 400 * time.Millisecond
	s, r := startServeHostname(t, serveHostnameOptions{HTTP: true, Linger: linger})
	addr := s.tcpAddr().String()
	start := time.Now()
	r.signal(syscall.SIGTERM)
	time.Sleep(50 * time.Millisecond)
	if g := get(t, addr, "/"); g.status != 200 || g.body != "sh-pod" {
		t.Fatalf("during linger: %d %q", g.status, g.body)
	}
	if code := r.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if el := time.Since(start); el < linger {
		t.Fatalf("stopped %v after SIGTERM, want at least %v", el, linger)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after exit")
	}
}
