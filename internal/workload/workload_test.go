package workload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// running is a workload's run method executing in the background.
type running struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	code   int
}

// startRun runs fn in the background; the test's cleanup stops it with SIGTERM
// and fails the test if it does not end.
func startRun(t *testing.T, fn func(context.Context) int) *running {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.code = fn(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel(signalCause{sig: syscall.SIGTERM})
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("workload did not stop within 10s of SIGTERM")
		}
	})
	return r
}

// signal ends the run's context as the given signal would.
func (r *running) signal(sig syscall.Signal) { r.cancel(signalCause{sig: sig}) }

// wait returns the run's exit code, failing the test if it takes longer than d.
func (r *running) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		t.Fatalf("workload still running after %v", d)
		return -1
	}
}

// ended reports whether the run has returned.
func (r *running) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// rawResponse is an HTTP answer read off a connection the test dialed itself,
// so the client's own address is known.
type rawResponse struct {
	status int
	header http.Header
	body   string
	close  bool   // the server will close the connection ("Connection: close")
	local  string // client end of the connection
	remote string // server end of the connection
}

// rawRequest sends one HTTP/1.1 request on a new connection to addr.
func rawRequest(t *testing.T, addr, method, target string, header map[string]string) rawResponse {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: test.local\r\nUser-Agent: workload-test\r\n", method, target)
	for k, v := range header {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: read response: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return rawResponse{
		status: resp.StatusCode,
		header: resp.Header,
		body:   string(body),
		close:  resp.Close,
		local:  conn.LocalAddr().String(),
		remote: conn.RemoteAddr().String(),
	}
}

// get is rawRequest for a GET without extra headers.
func get(t *testing.T, addr, target string) rawResponse {
	t.Helper()
	return rawRequest(t, addr, http.MethodGet, target, nil)
}

// closedPort returns a loopback TCP port that nothing listens on (it was just
// released).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := portOf(ln.Addr())
	ln.Close()
	return p
}

// closedUDPPort returns a loopback UDP port that nothing is bound to.
func closedUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := portOf(c.LocalAddr())
	c.Close()
	return p
}

// cancelledBy returns a context already ended by sig.
func cancelledBy(sig syscall.Signal) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(signalCause{sig: sig})
	return ctx
}

func TestNames(t *testing.T) {
	want := []string{"agnhost", "connect", "hello", "hello-plain", "netexec", "nginx", "nginx-exporter", "pause", "serve-hostname"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
}

// TestNamesDispatch checks that every listed name reaches its workload: with
// an unknown flag, each is refused by its own flag parser (2), not as an
// unknown workload; pause ignores arguments and returns on the ended context.
func TestNamesDispatch(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(cancelledBy(syscall.SIGTERM), []string{name, "--no-such-flag-xyz"}, &stdout, &stderr)
			if strings.Contains(stderr.String(), "unknown workload") {
				t.Fatalf("%s was not dispatched: %s", name, stderr.String())
			}
			want := 2
			if name == "pause" {
				want = 0
			}
			if code != want {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, want, stderr.String())
			}
		})
	}
}

func TestMainArguments(t *testing.T) {
	closed := strconv.Itoa(closedPort(t))
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string // substring
		wantStdout string // substring
	}{
		{name: "no args", args: nil, wantCode: 2, wantStderr: "no workload named"},
		{name: "unknown", args: []string{"bogus"}, wantCode: 2, wantStderr: `unknown workload "bogus"`},
		{name: "netexec bad flag", args: []string{"netexec", "--bogus"}, wantCode: 2, wantStderr: "flag provided but not defined: -bogus"},
		{name: "netexec bad value", args: []string{"netexec", "--http-port=abc"}, wantCode: 2, wantStderr: "invalid value"},
		{name: "netexec positional", args: []string{"netexec", "extra"}, wantCode: 2, wantStderr: "unexpected arguments"},
		{name: "netexec bad udp listen address", args: []string{"netexec", "--udp-listen-addresses=nope"}, wantCode: 2, wantStderr: "invalid address"},
		{name: "netexec help", args: []string{"netexec", "-h"}, wantCode: 0, wantStderr: "-http-port"},
		{name: "connect no destination", args: []string{"connect"}, wantCode: 2, wantStderr: "want exactly one host:port"},
		{name: "connect two destinations", args: []string{"connect", "a:1", "b:2"}, wantCode: 2, wantStderr: "want exactly one host:port"},
		{name: "serve-hostname bad flag", args: []string{"serve-hostname", "--port"}, wantCode: 2, wantStderr: "flag needs an argument"},
		{name: "serve-hostname tcp with http", args: []string{"serve-hostname", "--tcp"}, wantCode: 1, wantStderr: "can't serve TCP/UDP mode and HTTP mode"},
		{name: "hello bad flag", args: []string{"hello", "--port=80"}, wantCode: 2, wantStderr: "flag provided but not defined"},
		{name: "nginx positional", args: []string{"nginx", "x"}, wantCode: 2, wantStderr: "unexpected arguments"},
		{name: "agnhost alone", args: []string{"agnhost"}, wantCode: 2, wantStderr: "no subcommand"},
		{name: "agnhost help", args: []string{"agnhost", "--help"}, wantCode: 0, wantStdout: "connect, netexec, pause, serve-hostname"},
		{name: "agnhost unknown", args: []string{"agnhost", "porter"}, wantCode: 2, wantStderr: `subcommand "porter" is not built into amime`},
		{name: "agnhost non-agnhost workload", args: []string{"agnhost", "hello"}, wantCode: 2, wantStderr: `subcommand "hello"`},
		{name: "agnhost bad flag", args: []string{"agnhost", "netexec", "--bogus"}, wantCode: 2, wantStderr: "-bogus"},
		{name: "agnhost connect", args: []string{"agnhost", "connect", "127.0.0.1:" + closed}, wantCode: 1, wantStderr: "REFUSED\n"},
		{name: "agnhost connect flags after", args: []string{"agnhost", "connect", "127.0.0.1:" + closed, "--timeout=2s", "--protocol=tcp"}, wantCode: 1, wantStderr: "REFUSED\n"},
		{name: "agnhost by path", args: []string{"/agnhost", "connect", "127.0.0.1:" + closed}, wantCode: 1, wantStderr: "REFUSED\n"},
		{name: "connect by path", args: []string{"/usr/local/bin/connect", "--timeout", "2s", "127.0.0.1:" + closed}, wantCode: 1, wantStderr: "REFUSED\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantStdout)
			}
		})
	}
}

// TestAgnhostDispatchPause checks that "agnhost pause" is agnhost's pause and
// plain "pause" the pause image's.
func TestAgnhostDispatchPause(t *testing.T) {
	tests := []struct {
		args       []string
		sig        syscall.Signal
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{args: []string{"agnhost", "pause"}, sig: syscall.SIGTERM, wantCode: 2, wantStdout: "Paused\nexiting 2\n"},
		{args: []string{"agnhost", "pause"}, sig: syscall.SIGINT, wantCode: 1, wantStdout: "Paused\nexiting 1\n"},
		{args: []string{"pause"}, sig: syscall.SIGTERM, wantCode: 0, wantStderr: "Shutting down, got signal: Terminated\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " ")+" "+tt.sig.String(), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(cancelledBy(tt.sig), tt.args, &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.wantStdout)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		wantPositional []string
		wantTimeout    time.Duration
		wantProto      string
		wantErr        bool
	}{
		{name: "empty", args: nil, wantProto: "tcp"},
		{name: "flags first", args: []string{"--timeout=1s", "--protocol", "udp", "h:1"}, wantPositional: []string{"h:1"}, wantTimeout: time.Second, wantProto: "udp"},
		{name: "flags after", args: []string{"h:1", "--timeout=1s", "--protocol=udp"}, wantPositional: []string{"h:1"}, wantTimeout: time.Second, wantProto: "udp"},
		{name: "interleaved", args: []string{"a", "-timeout", "2s", "b", "--protocol=sctp", "c"}, wantPositional: []string{"a", "b", "c"}, wantTimeout: 2 * time.Second, wantProto: "sctp"},
		{name: "double dash", args: []string{"a", "--", "--timeout=1s"}, wantPositional: []string{"a", "--timeout=1s"}, wantProto: "tcp"},
		{name: "unknown flag", args: []string{"a", "--nope"}, wantErr: true},
		{name: "missing value", args: []string{"--timeout"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			timeout := fs.Duration("timeout", 0, "")
			proto := fs.String("protocol", "tcp", "")
			pos, err := parseArgs(fs, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if !slices.Equal(pos, tt.wantPositional) || *timeout != tt.wantTimeout || *proto != tt.wantProto {
				t.Fatalf("got %q, %v, %q; want %q, %v, %q", pos, *timeout, *proto, tt.wantPositional, tt.wantTimeout, tt.wantProto)
			}
		})
	}
}

func TestArgsExit(t *testing.T) {
	tests := []struct {
		err        error
		wantCode   int
		wantStderr string
	}{
		{err: flag.ErrHelp, wantCode: 0},
		{err: errors.New("flag provided but not defined: -x"), wantCode: 2},
		{err: usageErrorf("unexpected arguments: %q", []string{"x"}), wantCode: 2, wantStderr: "w: unexpected arguments: [\"x\"]\n"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		o := &cmdIO{stdout: io.Discard, stderr: &stderr}
		if code := argsExit(o, "w", tt.err); code != tt.wantCode || stderr.String() != tt.wantStderr {
			t.Errorf("argsExit(%v) = %d, stderr %q; want %d, %q", tt.err, code, stderr.String(), tt.wantCode, tt.wantStderr)
		}
	}
}

// TestNotifyContext sends the test process a real SIGTERM: the context must end
// with the signal as its cause.
func TestNotifyContext(t *testing.T) {
	ctx, stop := notifyContext(context.Background())
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not ended by SIGTERM")
	}
	if got := signalOf(ctx); got != syscall.SIGTERM {
		t.Fatalf("signalOf = %v, want SIGTERM", got)
	}
	if got := stopReason(ctx); got != "terminated" {
		t.Fatalf("stopReason = %q, want %q", got, "terminated")
	}
}

// mainArgsEnv makes the test binary run Main with these arguments (a JSON
// list) instead of the tests, so a test can run Main as a real process.
const mainArgsEnv = "AMIME_WORKLOAD_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if env, ok := os.LookupEnv(mainArgsEnv); ok {
		var args []string
		if err := json.Unmarshal([]byte(env), &args); err != nil {
			panic(err)
		}
		os.Exit(Main(args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// mainProcess is Main running in a child process.
type mainProcess struct {
	cmd    *exec.Cmd
	lines  chan string // stdout and stderr lines, as they come
	output *syncBuffer // everything, for failure messages
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) add(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line + "\n")
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startMain(t *testing.T, args ...string) *mainProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	encoded, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+string(encoded))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &mainProcess{cmd: cmd, lines: make(chan string, 100), output: &syncBuffer{}}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				p.output.add(sc.Text())
				select {
				case p.lines <- sc.Text():
				default:
				}
			}
		})
	}
	go func() { wg.Wait(); close(p.lines) }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// waitLine returns the submatches of the first output line matching re.
func (p *mainProcess) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("process ended without a line matching %v; output:\n%s", re, p.output)
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line matching %v within 10s; output:\n%s", re, p.output)
		}
	}
}

// stop sends sig and returns the exit code.
func (p *mainProcess) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range p.lines { // drain until both pipes close
		}
		done <- p.cmd.Wait()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("process did not exit within 10s of %v; output:\n%s", sig, p.output)
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestMainProcess runs Main as a process and stops it with real signals.
func TestMainProcess(t *testing.T) {
	t.Run("hello-plain SIGTERM", func(t *testing.T) {
		p := startMain(t, "hello-plain", "--listen=127.0.0.1:0")
		m := p.waitLine(t, regexp.MustCompile(`msg="Serving HTTP" addr=(127\.0\.0\.1:\d+)`))
		if r := get(t, m[1], "/"); !strings.HasPrefix(r.body, "Server address: "+m[1]+"\n") {
			t.Fatalf("answer %q", r.body)
		}
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("exit code %d, want 0; output:\n%s", code, p.output)
		}
	})
	t.Run("agnhost pause SIGTERM", func(t *testing.T) {
		p := startMain(t, "agnhost", "pause")
		p.waitLine(t, regexp.MustCompile(`^Paused$`))
		if code := p.stop(t, syscall.SIGTERM); code != 2 || !strings.Contains(p.output.String(), "exiting 2\n") {
			t.Fatalf("exit code %d, want 2 and \"exiting 2\"; output:\n%s", code, p.output)
		}
	})
	exitTests := []struct {
		name     string
		args     []string
		wantLine string
		wantCode int
	}{
		{name: "unknown workload", args: []string{"bogus"}, wantLine: `unknown workload "bogus"`, wantCode: 2},
		{name: "connect refused", args: []string{"/agnhost", "connect", "127.0.0.1:" + strconv.Itoa(closedPort(t)), "--timeout=2s"}, wantLine: `^REFUSED$`, wantCode: 1},
	}
	for _, tt := range exitTests {
		t.Run(tt.name, func(t *testing.T) {
			p := startMain(t, tt.args...)
			p.waitLine(t, regexp.MustCompile(tt.wantLine))
			for range p.lines {
			}
			if err := p.cmd.Wait(); p.cmd.ProcessState.ExitCode() != tt.wantCode {
				t.Fatalf("exit %v, want code %d", err, tt.wantCode)
			}
		})
	}
}
