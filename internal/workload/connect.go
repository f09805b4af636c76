package workload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// connect answers like "agnhost connect": it tries one TCP, UDP or SCTP
// connection and, on failure, prints a line that starts with a fixed word tests
// look for (UNKNOWN, TIMEOUT, DNS, REFUSED, OTHER) and exits 1.

type connectOptions struct {
	// Protocol is tcp (also ""), udp or sctp.
	Protocol string
	// Timeout bounds the attempt; 0 leaves it to the system (TCP) or waits for
	// the answer forever (UDP), as agnhost.
	Timeout time.Duration
	// UDPData and SCTPData are sent, with a newline, to get an answer.
	UDPData  string
	SCTPData string
}

type connector struct{ opts connectOptions }

func newConnector(o connectOptions) *connector { return &connector{opts: o} }

// probe tries dest ("host:port") and returns "" on success, or the line to
// print on stderr.
func (c *connector) probe(ctx context.Context, dest string) string {
	switch c.opts.Protocol {
	case "", "tcp":
		return c.probeTCP(ctx, dest)
	case "udp":
		return c.probeUDP(ctx, dest)
	case "sctp":
		return c.probeSCTP(dest)
	}
	return fmt.Sprintf("Unsupported protocol\n%s\n", c.opts.Protocol)
}

func (c *connector) probeTCP(ctx context.Context, dest string) string {
	// Parse and resolve first, to tell those errors apart from dial errors.
	if _, _, err := net.SplitHostPort(dest); err != nil {
		return fmt.Sprintf("UNKNOWN: %v\n", err)
	}
	if _, err := net.ResolveTCPAddr("tcp", dest); err != nil {
		return fmt.Sprintf("DNS: %v\n", err)
	}
	d := net.Dialer{Timeout: c.opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", dest)
	if err != nil {
		return tcpFailure(err)
	}
	conn.Close()
	return ""
}

// tcpFailure words a TCP dial error as agnhost does.
func tcpFailure(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		if opErr.Timeout() {
			return "TIMEOUT\n"
		}
		if errors.Is(opErr.Err, syscall.ECONNREFUSED) {
			return "REFUSED\n"
		}
	}
	return fmt.Sprintf("OTHER: %v\n", err)
}

func (c *connector) probeUDP(ctx context.Context, dest string) string {
	if _, err := net.ResolveUDPAddr("udp", dest); err != nil {
		return fmt.Sprintf("DNS: %v\n", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", dest)
	if err != nil {
		return fmt.Sprintf("OTHER: %v\n", err)
	}
	defer conn.Close()
	if c.opts.Timeout > 0 {
		if err := conn.SetDeadline(time.Now().Add(c.opts.Timeout)); err != nil {
			return fmt.Sprintf("OTHER: %v\n", err)
		}
	}
	// A stop signal ends a read that has no timeout.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write([]byte(c.opts.UDPData + "\n")); err != nil {
		return udpFailure(err)
	}
	buf := make([]byte, 1024)
	n, err := conn.Read(buf)
	if err != nil {
		return udpFailure(err)
	}
	if n == 0 {
		return "OTHER: No data received from the server. Cannot guarantee the server received the request.\n"
	}
	return ""
}

// udpFailure words a UDP write or read error as agnhost does.
func udpFailure(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("TIMEOUT: %v\n", err)
	case strings.Contains(err.Error(), "connection refused"):
		return fmt.Sprintf("REFUSED: %v\n", err)
	}
	return fmt.Sprintf("UNKNOWN: %v\n", err)
}

// probeSCTP resolves dest like agnhost, then fails: there are no SCTP sockets.
func (c *connector) probeSCTP(dest string) string {
	if _, err := resolveIPPort(dest); err != nil {
		return fmt.Sprintf("DNS: %v\n", err)
	}
	return fmt.Sprintf("OTHER: %v\n", errSCTPUnsupported)
}

func runConnect(ctx context.Context, name string, args []string, o *cmdIO) int {
	fs := newFlagSet(name, o)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags] host:port\n", name)
		fs.PrintDefaults()
	}
	var opts connectOptions
	fs.DurationVar(&opts.Timeout, "timeout", 0, "maximum time before returning an error")
	fs.StringVar(&opts.Protocol, "protocol", "tcp", "protocol of the connection: tcp, udp or sctp")
	fs.StringVar(&opts.UDPData, "udp-data", "hostname", "UDP payload sent to the server")
	fs.StringVar(&opts.SCTPData, "sctp-data", "hostname", "SCTP payload sent to the server")
	positional, err := parseArgs(fs, args)
	if err == nil && len(positional) != 1 {
		err = usageErrorf("want exactly one host:port argument, got %d", len(positional))
	}
	if err != nil {
		return argsExit(o, name, err)
	}
	if msg := newConnector(opts).probe(ctx, positional[0]); msg != "" {
		fmt.Fprint(o.stderr, msg)
		return 1
	}
	return 0
}
