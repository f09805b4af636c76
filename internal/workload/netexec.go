package workload

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// netexec answers like "agnhost netexec": an HTTP(S) server with agnhost's
// endpoints, and a UDP server for the hostname/echo/clientip commands.

const (
	// shellEnv enables /shell, which runs arbitrary commands on the lab host.
	shellEnv = "AMIME_NETEXEC_SHELL"
	// dialTimeout bounds one /dial try, as agnhost does (HTTP client timeout and
	// UDP read deadline).
	dialTimeout = 5 * time.Second
	// udpBufferSize is the largest datagram read or answered, as agnhost.
	udpBufferSize = 2048
	// maxUploadSize bounds an /upload body.
	maxUploadSize = 64 << 20
)

// errSCTPUnsupported is what SCTP use reports: the lab kernel has no SCTP sockets.
var errSCTPUnsupported = errors.New("protocol not supported")

type netexecOptions struct {
	// HTTPAddr is the TCP address of the HTTP(S) server, e.g. ":8080".
	HTTPAddr string
	// UDPAddrs are the UDP addresses to answer on; none disables UDP.
	UDPAddrs []string
	// SCTPPort is agnhost's --sctp-port; anything but -1 only logs an error.
	SCTPPort int
	// DelayShutdown keeps serving this long after the stop signal, with /readyz
	// failing and /healthz still OK.
	DelayShutdown time.Duration
	// HTTPOverride, if set, answers every request as a GET of this path and query.
	HTTPOverride string
	// TLSCertFile and TLSKeyFile switch the server to HTTPS.
	TLSCertFile string
	TLSKeyFile  string
	// EnableShell allows /shell; otherwise it answers 403.
	EnableShell bool
	// ShellPath runs /shell commands; default /bin/sh.
	ShellPath string
	// UploadDir receives /upload files; default <tmp>/amime-netexec-uploads.
	UploadDir string
	// Hostname answers /hostname and the UDP "hostname" command; empty means
	// os.Hostname() at each request, as agnhost.
	Hostname string
	Logger   *slog.Logger
}

type netexecServer struct {
	opts     netexecOptions
	log      *slog.Logger
	httpLn   net.Listener
	udpConns []*net.UDPConn
	srv      *http.Server
	useTLS   bool // fixed at construction; srv.TLSConfig belongs to net/http once serving
	client   *http.Client

	udpReady    atomic.Bool // a UDP server is running: /healthz and /readyz OK
	terminating atomic.Bool // a stop signal arrived: /readyz fails
	exitCh      chan exitRequest
	stopping    chan struct{} // closed when the server begins to stop
	stopOnce    sync.Once
}

// exitRequest asks run to stop and return code, waiting up to grace for
// requests in flight (0: close connections at once).
type exitRequest struct {
	code  int
	grace time.Duration
}

// newNetexecServer binds every listener, so that port errors surface here.
func newNetexecServer(o netexecOptions) (*netexecServer, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ShellPath == "" {
		o.ShellPath = "/bin/sh"
	}
	if o.UploadDir == "" {
		o.UploadDir = filepath.Join(os.TempDir(), "amime-netexec-uploads")
	}
	s := &netexecServer{
		opts:     o,
		log:      o.Logger,
		exitCh:   make(chan exitRequest, 1),
		stopping: make(chan struct{}),
		client: &http.Client{
			Timeout: dialTimeout,
			// A new connection for each try, as agnhost's fresh transport per try
			// gives: tries through a Service then spread over its endpoints. No
			// proxy: the lab's processes may inherit one from the host.
			Transport: &http.Transport{
				Proxy:               nil,
				DisableKeepAlives:   true,
				TLSHandshakeTimeout: 10 * time.Second,
			},
		},
	}
	var tlsConfig *tls.Config
	if o.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return nil, err
	}
	s.httpLn = ln
	for _, a := range o.UDPAddrs {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		c, err := net.ListenUDP("udp", ua)
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		s.udpConns = append(s.udpConns, c)
	}
	var h http.Handler = s.routes()
	if o.HTTPOverride != "" {
		h = s.override(h)
	}
	s.srv = newHTTPServer(h, s.log, 0)
	s.srv.TLSConfig = tlsConfig
	s.useTLS = tlsConfig != nil
	return s, nil
}

func (s *netexecServer) closeListeners() {
	if s.httpLn != nil {
		s.httpLn.Close()
	}
	for _, c := range s.udpConns {
		c.Close()
	}
}

// httpAddr is the bound address of the HTTP(S) server.
func (s *netexecServer) httpAddr() net.Addr { return s.httpLn.Addr() }

// udpAddr is the bound address of the i-th UDP server.
func (s *netexecServer) udpAddr(i int) net.Addr { return s.udpConns[i].LocalAddr() }

// run serves until ctx ends (then, after DelayShutdown, stops gracefully and
// returns 0), until /exit or /shutdown asks for a code, or until a server fails
// (returns 1).
func (s *netexecServer) run(ctx context.Context) int {
	var wg sync.WaitGroup
	errc := make(chan error, 1+len(s.udpConns))

	if s.opts.SCTPPort != -1 {
		s.log.Error("SCTP server not started: this environment has no SCTP sockets", "port", s.opts.SCTPPort, "err", errSCTPUnsupported)
	}
	if len(s.udpConns) > 0 {
		s.udpReady.Store(true)
	}
	for _, c := range s.udpConns {
		s.log.Info("Started UDP server", "addr", c.LocalAddr().String())
		wg.Go(func() {
			err := s.serveUDP(c)
			s.udpReady.Store(false)
			s.log.Info("UDP server exited", "addr", c.LocalAddr().String())
			if err != nil {
				errc <- fmt.Errorf("UDP server on %s: %w", c.LocalAddr(), err)
			}
		})
	}
	wg.Go(func() {
		var err error
		if s.useTLS {
			err = s.srv.ServeTLS(s.httpLn, "", "")
		} else {
			err = s.srv.Serve(s.httpLn)
		}
		if err = serveErr(err); err != nil {
			errc <- fmt.Errorf("HTTP server: %w", err)
		}
	})
	s.log.Info("Started HTTP server", "port", portOf(s.httpAddr()), "tls", s.useTLS)

	code := s.wait(ctx, errc)
	wg.Wait()
	return code
}

func (s *netexecServer) wait(ctx context.Context, errc <-chan error) int {
	select {
	case req := <-s.exitCh:
		return s.stop(req)
	case err := <-errc:
		s.log.Error("server failed", "err", err)
		s.stop(exitRequest{})
		return 1
	case <-ctx.Done():
	}
	s.terminating.Store(true)
	s.log.Info("Stopping", "reason", stopReason(ctx))
	if d := s.opts.DelayShutdown; d > 0 {
		s.log.Info(fmt.Sprintf("Sleeping %v before terminating...", d))
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case req := <-s.exitCh:
			return s.stop(req)
		case err := <-errc:
			s.log.Error("server failed", "err", err)
			s.stop(exitRequest{})
			return 1
		}
	}
	return s.stop(exitRequest{code: 0, grace: shutdownGrace})
}

func (s *netexecServer) stop(req exitRequest) int {
	s.stopOnce.Do(func() { close(s.stopping) })
	err := shutdownHTTP(s.srv, req.grace)
	if req.grace > 0 {
		s.log.Info("Graceful shutdown completed", "err", err)
	}
	for _, c := range s.udpConns {
		c.Close()
	}
	return req.code
}

// requestExit hands an exit request to run; the first one wins.
func (s *netexecServer) requestExit(req exitRequest) {
	select {
	case s.exitCh <- req:
	default:
	}
}

func (s *netexecServer) hostname() (string, error) {
	return hostnameOr(s.opts.Hostname)
}

// serveUDP answers datagrams until conn is closed.
func (s *netexecServer) serveUDP(conn *net.UDPConn) error {
	buf := make([]byte, udpBufferSize)
	for {
		n, peer, err := conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		reply, ok := s.datagramReply(string(buf[:n]), peer.String())
		if !ok {
			continue
		}
		if _, err := conn.WriteToUDP([]byte(reply), peer); err != nil {
			s.log.Warn("UDP reply failed", "client", peer.String(), "err", err)
		}
	}
}

// datagramReply answers one UDP command the way agnhost does: the text is
// trimmed and lower-cased first (so "echo Foo" answers "foo"), and unknown or
// empty commands get no answer.
func (s *netexecServer) datagramReply(text, client string) (string, bool) {
	cmd := strings.ToLower(strings.TrimSpace(text))
	switch {
	case cmd == "hostname":
		h, err := s.hostname()
		if err != nil {
			s.log.Error("hostname failed", "err", err)
			return "", false
		}
		return h, true
	case strings.HasPrefix(cmd, "echo "):
		_, msg, _ := strings.Cut(cmd, " ")
		return msg, true
	case cmd == "clientip":
		return client, true
	case cmd != "":
		s.log.Info("Unknown UDP command", "client", client, "command", cmd)
	}
	return "", false
}

// override answers every request as a GET of HTTPOverride.
func (s *netexecServer) override(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, err := http.NewRequestWithContext(r.Context(), http.MethodGet, s.opts.HTTPOverride, nil)
		if err != nil {
			http.Error(w, fmt.Sprintf("override request failed: %v", err), http.StatusInternalServerError)
			return
		}
		// agnhost drops these; keeping them lets /clientip and /header still work.
		o.RemoteAddr = r.RemoteAddr
		o.Header = r.Header
		o.Host = r.Host
		o.RequestURI = o.URL.RequestURI()
		next.ServeHTTP(w, o)
	})
}

func (s *netexecServer) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.handleRoot)
	mux.HandleFunc("/clientip", s.handleClientIP)
	mux.HandleFunc("/header", s.handleHeader)
	mux.HandleFunc("/dial", s.handleDial)
	mux.HandleFunc("/echo", s.handleEcho)
	mux.HandleFunc("/exit", s.handleExit)
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/readyz", s.handleReadyz)
	mux.HandleFunc("/hostname", s.handleHostname)
	mux.HandleFunc("/hostName", s.handleHostname)
	mux.HandleFunc("/redirect", s.handleRedirect)
	mux.HandleFunc("/shell", s.handleShell)
	mux.HandleFunc("/upload", s.handleUpload)
	mux.HandleFunc("/shutdown", s.handleShutdown)
	return mux
}

func (s *netexecServer) logRequest(r *http.Request) {
	s.log.Info("request", "method", r.Method, "uri", r.URL.RequestURI(), "client", r.RemoteAddr)
}

// handleRoot answers the time, as Go prints time.Now(); it also catches every
// path without its own handler.
func (s *netexecServer) handleRoot(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	fmt.Fprintf(w, "NOW: %v", time.Now())
}

func (s *netexecServer) handleClientIP(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	io.WriteString(w, r.RemoteAddr)
}

// handleHeader answers one request header's value, or all of them as JSON.
func (s *netexecServer) handleHeader(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	if key := r.FormValue("key"); key != "" {
		io.WriteString(w, r.Header.Get(key))
		return
	}
	b, err := json.Marshal(r.Header)
	if err != nil {
		fmt.Fprintf(w, "error marshalling header, err: %v", err)
		return
	}
	w.Write(b)
}

// statusArg parses an optional status code argument. A code net/http cannot
// send is refused like a non-integer (agnhost would panic in WriteHeader).
func statusArg(w http.ResponseWriter, v string) (int, bool) {
	code, err := strconv.Atoi(v)
	if err != nil || code < 100 || code > 999 {
		fmt.Fprintf(w, "argument 'code' must be an integer or empty, got %q\n", v)
		return 0, false
	}
	return code, true
}

func (s *netexecServer) handleEcho(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	msg := r.FormValue("msg")
	if c := r.FormValue("code"); c != "" {
		code, ok := statusArg(w, c)
		if !ok {
			return
		}
		w.WriteHeader(code)
	}
	io.WriteString(w, msg)
}

func (s *netexecServer) handleRedirect(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	code := http.StatusFound
	if c := r.FormValue("code"); c != "" {
		var ok bool
		if code, ok = statusArg(w, c); !ok {
			return
		}
	}
	http.Redirect(w, r, r.FormValue("location"), code)
}

func (s *netexecServer) handleHostname(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	h, err := s.hostname()
	if err != nil {
		http.Error(w, fmt.Sprintf("failed to get hostname: %v", err), http.StatusInternalServerError)
		return
	}
	io.WriteString(w, h)
}

// handleHealthz is OK while a UDP server runs, 412 otherwise (so also always
// with --udp-port=-1), as agnhost.
func (s *netexecServer) handleHealthz(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	if s.udpReady.Load() {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusPreconditionFailed)
}

// handleReadyz is /healthz that also fails with 503 once a stop signal arrived.
func (s *netexecServer) handleReadyz(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	switch {
	case s.terminating.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "shutting down")
	case s.udpReady.Load():
		io.WriteString(w, "ok")
	default:
		w.WriteHeader(http.StatusPreconditionFailed)
	}
}

// handleExit stops the server and makes run return "code", after "wait", allowing
// "timeout" for connections to close (0: at once). Argument errors answer 200
// with a message, as agnhost.
func (s *netexecServer) handleExit(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	waitArg, timeoutArg, codeArg := r.FormValue("wait"), r.FormValue("timeout"), r.FormValue("code")
	timeout, err := time.ParseDuration(timeoutArg)
	if err != nil && timeoutArg != "" {
		fmt.Fprintf(w, "argument 'timeout' must be a valid golang duration or empty, got %q\n", timeoutArg)
		return
	}
	wait, err := time.ParseDuration(waitArg)
	if err != nil && waitArg != "" {
		fmt.Fprintf(w, "argument 'wait' must be a valid golang duration or empty, got %q\n", waitArg)
		return
	}
	code, err := strconv.Atoi(codeArg)
	if err != nil && codeArg != "" {
		fmt.Fprintf(w, "argument 'code' must be an integer [0-127] or empty, got %q\n", codeArg)
		return
	}
	s.log.Info("Will begin shutdown", "wait", wait, "timeout", timeout, "code", code)
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.stopping:
			t.Stop()
		}
	}
	if timeout <= 0 {
		s.exitNow(w, code)
		return
	}
	s.requestExit(exitRequest{code: code, grace: timeout})
}

// exitNow completes an empty 200 answer on the wire, then asks run to close
// everything and return code.
func (s *netexecServer) exitNow(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	s.requestExit(exitRequest{code: code})
}

// handleShutdown makes run return 0 at once.
func (s *netexecServer) handleShutdown(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	s.exitNow(w, 0)
}

// handleShell runs "shellCommand" or "cmd" with the shell, only if enabled.
func (s *netexecServer) handleShell(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	if !s.opts.EnableShell {
		http.Error(w, "the /shell endpoint is disabled in amime's built-in netexec; set "+shellEnv+"=1 in the workload's environment to enable it", http.StatusForbidden)
		return
	}
	cmd := r.FormValue("shellCommand")
	if cmd == "" {
		cmd = r.FormValue("cmd")
	}
	// Bound to the request: a client that goes away takes its command with it.
	out, err := exec.CommandContext(r.Context(), s.opts.ShellPath, "-c", cmd).CombinedOutput()
	result := map[string]string{}
	if len(out) > 0 {
		result["output"] = string(out)
	}
	if err != nil {
		result["error"] = err.Error()
	}
	writeJSON(w, result)
}

// handleUpload stores the multipart "file" in UploadDir and answers its path.
func (s *netexecServer) handleUpload(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	fail := func(msg string, err error) {
		s.log.Warn(msg, "err", err)
		writeJSON(w, map[string]string{"error": msg})
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUploadSize)
	file, _, err := r.FormFile("file")
	if err != nil {
		fail("Unable to upload file.", err)
		return
	}
	defer file.Close()
	if err := os.MkdirAll(s.opts.UploadDir, 0o700); err != nil {
		fail("Unable to open file for write", err)
		return
	}
	f, err := os.CreateTemp(s.opts.UploadDir, "upload")
	if err != nil {
		fail("Unable to open file for write", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, file); err != nil {
		fail("Unable to write file.", err)
		return
	}
	if err := os.Chmod(f.Name(), 0o700); err != nil {
		fail("Unable to chmod file.", err)
		return
	}
	s.log.Info("Wrote upload", "path", f.Name())
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, map[string]string{"output": f.Name()})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("response could not be serialized. %v", err), http.StatusExpectationFailed)
		return
	}
	w.Write(b)
}

// dialer performs one /dial try.
type dialer func(ctx context.Context, request, hostPort string) (string, error)

// handleDial makes "tries" requests to host:port and answers
// {"errors":[...],"responses":[...]}.
func (s *netexecServer) handleDial(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	q := r.URL.Query()
	host, port, request, protocol := q.Get("host"), q.Get("port"), q.Get("request"), q.Get("protocol")
	tries := 1
	var err error
	if t := q.Get("tries"); t != "" {
		tries, err = strconv.Atoi(t)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("tries parameter is invalid. %v", err), http.StatusBadRequest)
		return
	}
	if request == "" {
		// agnhost prints its (nil) error here too.
		http.Error(w, fmt.Sprintf("request parameter not specified. %v", err), http.StatusBadRequest)
		return
	}
	hostPort := net.JoinHostPort(host, port)
	var dial dialer
	var target string
	switch strings.ToLower(protocol) {
	case "", "http":
		var a *net.TCPAddr
		if a, err = net.ResolveTCPAddr("tcp", hostPort); err == nil {
			target, dial = a.String(), s.dialHTTP
		}
	case "udp":
		var a *net.UDPAddr
		if a, err = net.ResolveUDPAddr("udp", hostPort); err == nil {
			target, dial = a.String(), dialUDP
		}
	case "sctp":
		if target, err = resolveIPPort(hostPort); err == nil {
			dial = dialSCTP
		}
	default:
		http.Error(w, fmt.Sprintf("unsupported protocol. %s", protocol), http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
		return
	}

	var res dialResults
	for i := 0; i < tries && r.Context().Err() == nil; i++ {
		resp, err := dial(r.Context(), request, target)
		res.add(resp, err)
	}
	b, err := res.marshal()
	if err != nil {
		http.Error(w, fmt.Sprintf("response could not be serialized. %v", err), http.StatusExpectationFailed)
		return
	}
	w.Write(b)
}

// dialResults collects /dial tries.
type dialResults struct {
	responses []string
	errors    []string
	last      string // the last try's response, "" if it failed
}

func (d *dialResults) add(resp string, err error) {
	if err != nil {
		d.errors = append(d.errors, err.Error())
		d.last = ""
		return
	}
	d.responses = append(d.responses, resp)
	d.last = resp
}

// marshal encodes the results as agnhost does: "errors" only if a try failed,
// and "responses" only if the last try answered something non-empty (so a
// failing last try hides earlier answers, as upstream).
func (d *dialResults) marshal() ([]byte, error) {
	out := map[string][]string{}
	if d.last != "" {
		out["responses"] = d.responses
	}
	if len(d.errors) > 0 {
		out["errors"] = d.errors
	}
	return json.Marshal(out)
}

// dialHTTP GETs http://<target>/<request> and answers the body, whatever the
// status.
func (s *netexecServer) dialHTTP(ctx context.Context, request, target string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/%s", target, request), nil)
	if err != nil {
		return "", err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return string(body), nil
}

// dialUDP sends request in one datagram and answers the first reply.
func dialUDP(ctx context.Context, request, target string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", target)
	if err != nil {
		return "", fmt.Errorf("udp dial failed. err:%v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(request)); err != nil {
		return "", fmt.Errorf("udp connection write failed. err:%v", err)
	}
	deadline := time.Now().Add(dialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, udpBufferSize)
	n, err := conn.Read(buf)
	if err != nil || n == 0 {
		return "", fmt.Errorf("reading from udp connection failed. err:'%v'", err)
	}
	return string(buf[:n]), nil
}

// dialSCTP always fails: there are no SCTP sockets here.
func dialSCTP(context.Context, string, string) (string, error) {
	return "", fmt.Errorf("sctp dial failed. err:%v", errSCTPUnsupported)
}

// resolveIPPort resolves "host:port" (numeric or named port) to "ip:port".
func resolveIPPort(hostPort string) (string, error) {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", err
	}
	ip, err := net.ResolveIPAddr("ip", host)
	if err != nil {
		return "", err
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(p)), nil
}

// netexecFlags turns agnhost netexec's command line into options.
func netexecFlags(fs *flag.FlagSet, args []string) (netexecOptions, error) {
	httpPort := fs.Int("http-port", 8080, "HTTP listen port")
	certFile := fs.String("tls-cert-file", "", "file with an x509 certificate for HTTPS (CA certificates, if any, concatenated after it)")
	keyFile := fs.String("tls-private-key-file", "", "file with the x509 private key matching --tls-cert-file")
	udpPort := fs.Int("udp-port", 8081, "UDP listen port; -1 disables the UDP server")
	sctpPort := fs.Int("sctp-port", -1, "SCTP listen port (SCTP is unavailable here: only logs an error)")
	override := fs.String("http-override", "", "answer every HTTP request as a GET of this path and query")
	udpListen := fs.String("udp-listen-addresses", "", "comma-separated IP addresses for the UDP server (default: all)")
	delay := fs.Int("delay-shutdown", 0, "seconds to keep serving after SIGTERM, with /readyz failing")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return netexecOptions{}, err
	}
	if len(positional) > 0 {
		return netexecOptions{}, usageErrorf("unexpected arguments: %q", positional)
	}
	o := netexecOptions{
		HTTPAddr:      net.JoinHostPort("", strconv.Itoa(*httpPort)),
		SCTPPort:      *sctpPort,
		DelayShutdown: time.Duration(*delay) * time.Second,
		HTTPOverride:  *override,
		TLSCertFile:   *certFile,
		TLSKeyFile:    *keyFile,
	}
	if *udpPort != -1 {
		hosts, err := parseUDPListenAddresses(*udpListen)
		if err != nil {
			return netexecOptions{}, err
		}
		for _, h := range hosts {
			o.UDPAddrs = append(o.UDPAddrs, net.JoinHostPort(h, strconv.Itoa(*udpPort)))
		}
	}
	return o, nil
}

// parseUDPListenAddresses parses --udp-listen-addresses: "" is every address,
// otherwise a sorted, de-duplicated list of IPs.
func parseUDPListenAddresses(s string) ([]string, error) {
	if s == "" {
		return []string{""}, nil
	}
	var out []string
	for _, a := range strings.Split(s, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return nil, usageErrorf("invalid address %q in --udp-listen-addresses", a)
		}
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// shellEnabled reads the environment switch for /shell.
func shellEnabled() bool {
	ok, _ := strconv.ParseBool(os.Getenv(shellEnv))
	return ok
}

func runNetexec(ctx context.Context, name string, args []string, o *cmdIO) int {
	fs := newFlagSet(name, o)
	opts, err := netexecFlags(fs, args)
	if err != nil {
		return argsExit(o, name, err)
	}
	opts.EnableShell = shellEnabled()
	opts.Logger = o.log
	s, err := newNetexecServer(opts)
	if err != nil {
		o.errorf(name, "%v", err)
		return 1
	}
	return s.run(ctx)
}
