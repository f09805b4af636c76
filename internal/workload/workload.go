// Package workload holds the built-in workloads that the amime lab runs as host
// processes in place of well-known test images. Each one answers on the wire like
// the image it stands in for:
//
//   - netexec, connect, serve-hostname: the agnhost subcommands of the same names
//     (registry.k8s.io/e2e-test-images/agnhost);
//   - pause: registry.k8s.io/pause (agnhost's own pause is reached as "agnhost pause");
//   - hello, hello-plain: nginxdemos/hello and nginxdemos/hello:plain-text;
//   - nginx: the default site of the nginx image;
//   - nginx-exporter: nginx/nginx-prometheus-exporter's availability metrics.
//
// Main is the only entry point; it is meant to be the whole body of a process.
package workload

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Timeouts shared by the HTTP servers. They bound what a slow or silent client can
// hold; handlers that legitimately run long (netexec's /dial, /shell, /exit?wait=)
// are not cut by a write timeout, see newHTTPServer.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute
	idleTimeout       = 2 * time.Minute
	pageWriteTimeout  = 30 * time.Second
	// shutdownGrace is how long a graceful stop waits for requests in flight.
	shutdownGrace = 5 * time.Second
)

// cmdIO is what a workload gets from Main: where to write and how to log.
type cmdIO struct {
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// errorf writes a one-line fatal error, prefixed with the workload name, to stderr.
func (o *cmdIO) errorf(name, format string, args ...any) {
	fmt.Fprintf(o.stderr, "%s: %s\n", name, fmt.Sprintf(format, args...))
}

type runFunc func(ctx context.Context, name string, args []string, o *cmdIO) int

// commands maps each name Main accepts to its implementation.
func commands() map[string]runFunc {
	return map[string]runFunc{
		"agnhost":        runAgnhost,
		"connect":        runConnect,
		"hello":          runHello,
		"hello-plain":    runHelloPlain,
		"netexec":        runNetexec,
		"nginx":          runNginx,
		"nginx-exporter": runNginxExporter,
		"pause":          runPause,
		"serve-hostname": runServeHostname,
	}
}

// agnhostCommands maps the agnhost subcommands that are built in.
func agnhostCommands() map[string]runFunc {
	return map[string]runFunc{
		"connect":        runConnect,
		"netexec":        runNetexec,
		"pause":          runAgnhostPause,
		"serve-hostname": runServeHostname,
	}
}

// Names lists the workloads Main accepts, sorted.
func Names() []string {
	return sortedKeys(commands())
}

func sortedKeys(m map[string]runFunc) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Main runs the built-in workload named by args[0] with the remaining args as its
// flags, and returns the process exit code. It blocks until the workload ends.
// The first SIGTERM or SIGINT asks the workload to stop (gracefully, exit 0 unless
// the workload defines otherwise); a second one gets the default action, so a
// workload that lingers after the first (netexec --delay-shutdown, serve-hostname)
// can still be ended at once. Unknown names return 2 with a message on stderr.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := notifyContext(context.Background())
	defer stop()
	return run(ctx, args, stdout, stderr)
}

// run is Main without the signal handling: ctx ends the workload, and
// context.Cause(ctx) may carry the signal that did it (see signalOf).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &cmdIO{
		stdout: stdout,
		stderr: stderr,
		log:    slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if len(args) == 0 {
		fmt.Fprintf(stderr, "workload: no workload named; choose one of: %s\n", strings.Join(Names(), ", "))
		return 2
	}
	// Pods name the binary either bare or by path (command: [/agnhost, ...]).
	name := path.Base(args[0])
	fn, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "workload: unknown workload %q; choose one of: %s\n", args[0], strings.Join(Names(), ", "))
		return 2
	}
	return fn(ctx, name, args[1:], o)
}

// runAgnhost dispatches "agnhost <subcommand> [flags]".
func runAgnhost(ctx context.Context, _ string, args []string, o *cmdIO) int {
	subs := agnhostCommands()
	supported := strings.Join(sortedKeys(subs), ", ")
	if len(args) == 0 {
		fmt.Fprintf(o.stderr, "agnhost: no subcommand given; built-in subcommands: %s\n", supported)
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(o.stdout, "usage: agnhost <subcommand> [flags]\nbuilt-in subcommands: %s\n", supported)
		return 0
	}
	fn, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(o.stderr, "agnhost: subcommand %q is not built into amime; built-in subcommands: %s\n", args[0], supported)
		return 2
	}
	return fn(ctx, args[0], args[1:], o)
}

// signalCause is the cancellation cause notifyContext records.
type signalCause struct{ sig os.Signal }

func (c signalCause) Error() string { return "received signal " + c.sig.String() }

// notifyContext returns a context cancelled, with a signalCause, by the first
// SIGTERM or SIGINT. After that first signal the handler is removed, so a second
// one ends the process with the signal's default action.
func notifyContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
			cancel(signalCause{sig: s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// signalOf returns the signal that ended ctx, or nil if it ended otherwise.
func signalOf(ctx context.Context) os.Signal {
	var c signalCause
	if errors.As(context.Cause(ctx), &c) {
		return c.sig
	}
	return nil
}

// stopReason describes why ctx ended, for log lines.
func stopReason(ctx context.Context) string {
	if s := signalOf(ctx); s != nil {
		return s.String()
	}
	return context.Cause(ctx).Error()
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, o *cmdIO) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(o.stderr)
	return fs
}

// parseArgs parses flags that may appear before, between or after positional
// arguments, as agnhost's (pflag) command line allows: e2e tests run
// "connect host:port --timeout=1s". A "--" ends flag parsing.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usageError is a command-line error that the flag package has not reported.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// argsExit reports a command-line error if the flag package has not, and turns
// it into an exit code: 0 for -h, 2 otherwise.
func argsExit(o *cmdIO, name string, err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		o.errorf(name, "%v", ue)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// newHTTPServer returns a server with bounded read timeouts. writeTimeout 0 leaves
// writes unbounded, for handlers whose run time the client chooses.
func newHTTPServer(h http.Handler, log *slog.Logger, writeTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// shutdownHTTP stops srv, waiting at most grace for requests in flight; grace 0
// closes every connection at once.
func shutdownHTTP(srv *http.Server, grace time.Duration) error {
	if grace <= 0 {
		return srv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	return err
}

// serveErr maps the normal end of Serve to nil.
func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// hostnameOr returns name, or the machine's host name if name is empty.
func hostnameOr(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	return os.Hostname()
}

// portOf returns the port of a TCP or UDP address, or -1.
func portOf(a net.Addr) int {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return -1
}
