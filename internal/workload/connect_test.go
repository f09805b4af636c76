package workload

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConnect(t *testing.T) {
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	// A UDP socket that never answers, for the UDP timeout.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	udpServer, _ := startNetexec(t, netexecOptions{Hostname: "udp-pod"})

	openAddr := open.Addr().String()
	closedAddr := "127.0.0.1:" + strconv.Itoa(closedPort(t))
	udpAddr := udpServer.udpAddr(0).String()
	closedUDPAddr := "127.0.0.1:" + strconv.Itoa(closedUDPPort(t))
	silentAddr := silent.LocalAddr().String()

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string // exact, or prefix if wantPrefix
		wantPrefix bool
	}{
		{name: "tcp open", args: []string{openAddr}, wantCode: 0},
		{name: "tcp open with timeout", args: []string{"--timeout=2s", openAddr}, wantCode: 0},
		{name: "tcp refused", args: []string{closedAddr, "--timeout=2s"}, wantCode: 1, wantStderr: "REFUSED\n"},
		{name: "tcp refused, explicit protocol", args: []string{"--protocol", "tcp", closedAddr}, wantCode: 1, wantStderr: "REFUSED\n"},
		{name: "missing port", args: []string{"127.0.0.1"}, wantCode: 1, wantStderr: "UNKNOWN: address 127.0.0.1: missing port in address\n"},
		{name: "unknown service", args: []string{"127.0.0.1:no-such-service-xyz"}, wantCode: 1, wantStderr: "DNS: ", wantPrefix: true},
		{name: "udp to netexec", args: []string{udpAddr, "--protocol=udp", "--timeout=2s"}, wantCode: 0},
		{name: "udp custom data", args: []string{udpAddr, "--protocol=udp", "--timeout=2s", "--udp-data=echo x"}, wantCode: 0},
		{name: "udp refused", args: []string{closedUDPAddr, "--protocol=udp", "--timeout=2s"}, wantCode: 1, wantStderr: "REFUSED: ", wantPrefix: true},
		{name: "udp timeout", args: []string{silentAddr, "--protocol=udp", "--timeout=200ms"}, wantCode: 1, wantStderr: "TIMEOUT: ", wantPrefix: true},
		{name: "udp unknown service", args: []string{"127.0.0.1:no-such-service-xyz", "--protocol=udp"}, wantCode: 1, wantStderr: "DNS: ", wantPrefix: true},
		{name: "sctp", args: []string{openAddr, "--protocol=sctp"}, wantCode: 1, wantStderr: "OTHER: protocol not supported\n"},
		{name: "sctp bad address", args: []string{"nope", "--protocol=sctp"}, wantCode: 1, wantStderr: "DNS: ", wantPrefix: true},
		{name: "unsupported protocol", args: []string{openAddr, "--protocol=icmp"}, wantCode: 1, wantStderr: "Unsupported protocol\nicmp\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			o := &cmdIO{stdout: &stdout, stderr: &stderr}
			code := runConnect(context.Background(), "connect", tt.args, o)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			got := stderr.String()
			if tt.wantPrefix && !strings.HasPrefix(got, tt.wantStderr) || !tt.wantPrefix && got != tt.wantStderr {
				t.Errorf("stderr %q, want %q (prefix %v)", got, tt.wantStderr, tt.wantPrefix)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// TestConnectUDPStopped: a UDP probe without timeout waits for its answer
// forever, as agnhost, but a stop signal ends it.
func TestConnectUDPStopped(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := newConnector(connectOptions{Protocol: "udp", UDPData: "hostname"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if msg := c.probe(ctx, silent.LocalAddr().String()); !strings.HasPrefix(msg, "TIMEOUT: ") {
		t.Fatalf("probe = %q, want a TIMEOUT line", msg)
	}
	// The server got the payload with its newline.
	buf := make([]byte, 64)
	silent.SetReadDeadline(time.Now().Add(time.Second))
	n, _, err := silent.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hostname\n" {
		t.Fatalf("server got %q, %v; want %q", buf[:n], err, "hostname\n")
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestTCPFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "timeout", err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutError{}}, want: "TIMEOUT\n"},
		{name: "refused", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, want: "REFUSED\n"},
		{name: "unreachable", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, want: "OTHER: dial tcp: connect: no route to host\n"},
		{name: "not an OpError", err: errors.New("weird"), want: "OTHER: weird\n"},
	}
	for _, tt := range tests {
		if got := tcpFailure(tt.err); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestUDPFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "timeout", err: &net.OpError{Op: "read", Net: "udp", Err: timeoutError{}}, want: "TIMEOUT: read udp: i/o timeout\n"},
		{name: "refused", err: &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ECONNREFUSED)}, want: "REFUSED: read udp: recvfrom: connection refused\n"},
		{name: "other", err: errors.New("weird"), want: "UNKNOWN: weird\n"},
	}
	for _, tt := range tests {
		if got := udpFailure(tt.err); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
