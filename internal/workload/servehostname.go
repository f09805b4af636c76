package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// serve-hostname answers like "agnhost serve-hostname": the host name, and
// nothing else, over HTTP (any path), raw TCP (then close) or UDP (a reply to
// every datagram).

// serveHostnameLinger is how long agnhost keeps serving after SIGTERM
// ("Awaiting pod deletion") before it exits 0.
const serveHostnameLinger = 60 * time.Second

type serveHostnameOptions struct {
	// Addr is where to listen, e.g. ":9376". TCP (or HTTP) and UDP share its
	// port; with port 0, UDP takes the port TCP was given.
	Addr string
	TCP  bool
	UDP  bool
	HTTP bool
	// Close makes HTTP answers close the connection.
	Close bool
	// Linger keeps serving this long after ctx ends.
	Linger time.Duration
	// Hostname is the answer; empty means os.Hostname() at start, as agnhost.
	Hostname string
	Logger   *slog.Logger
}

type serveHostnameServer struct {
	opts     serveHostnameOptions
	log      *slog.Logger
	hostname string
	tcpLn    net.Listener // raw TCP or HTTP
	udpConn  *net.UDPConn
	srv      *http.Server
}

func newServeHostnameServer(o serveHostnameOptions) (*serveHostnameServer, error) {
	if o.HTTP && (o.TCP || o.UDP) {
		return nil, errors.New("can't serve TCP/UDP mode and HTTP mode at the same time")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := hostnameOr(o.Hostname)
	if err != nil {
		return nil, fmt.Errorf("get hostname: %w", err)
	}
	s := &serveHostnameServer{opts: o, log: o.Logger, hostname: h}
	udpAddr := o.Addr
	if o.TCP || o.HTTP {
		if s.tcpLn, err = net.Listen("tcp", o.Addr); err != nil {
			return nil, err
		}
		host, _, _ := net.SplitHostPort(o.Addr)
		udpAddr = net.JoinHostPort(host, strconv.Itoa(portOf(s.tcpLn.Addr())))
	}
	if o.UDP {
		ua, err := net.ResolveUDPAddr("udp", udpAddr)
		if err == nil {
			s.udpConn, err = net.ListenUDP("udp", ua)
		}
		if err != nil {
			if s.tcpLn != nil {
				s.tcpLn.Close()
			}
			return nil, err
		}
	}
	if o.HTTP {
		s.srv = newHTTPServer(http.HandlerFunc(s.handleHTTP), s.log, pageWriteTimeout)
	}
	return s, nil
}

// tcpAddr is the bound TCP (or HTTP) address, nil if neither is served.
func (s *serveHostnameServer) tcpAddr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// udpAddr is the bound UDP address, nil if UDP is not served.
func (s *serveHostnameServer) udpAddr() net.Addr {
	if s.udpConn == nil {
		return nil
	}
	return s.udpConn.LocalAddr()
}

func (s *serveHostnameServer) handleHTTP(w http.ResponseWriter, r *http.Request) {
	s.log.Info("HTTP request", "client", r.RemoteAddr)
	if s.opts.Close {
		w.Header().Set("Connection", "close")
	}
	io.WriteString(w, s.hostname)
}

func (s *serveHostnameServer) serveTCP() error {
	for {
		conn, err := s.tcpLn.Accept()
		if err != nil {
			return err
		}
		s.log.Info("TCP request", "client", conn.RemoteAddr().String())
		conn.SetWriteDeadline(time.Now().Add(pageWriteTimeout))
		io.WriteString(conn, s.hostname)
		conn.Close()
	}
}

func (s *serveHostnameServer) serveUDP() error {
	var buf [16]byte
	for {
		_, peer, err := s.udpConn.ReadFrom(buf[:])
		if err != nil {
			return err
		}
		s.log.Info("UDP request", "client", peer.String())
		if _, err := s.udpConn.WriteTo([]byte(s.hostname), peer); err != nil {
			s.log.Warn("UDP reply failed", "client", peer.String(), "err", err)
		}
	}
}

// run serves until ctx ends, keeps serving for Linger, then stops and returns
// 0; it returns 1 if a server fails.
func (s *serveHostnameServer) run(ctx context.Context) int {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	start := func(serve func() error) {
		wg.Go(func() {
			if err := serveErr(serve()); err != nil {
				errc <- err
			}
		})
	}
	switch {
	case s.srv != nil:
		start(func() error { return s.srv.Serve(s.tcpLn) })
	case s.tcpLn != nil:
		start(s.serveTCP)
	}
	if s.udpConn != nil {
		start(s.serveUDP)
	}
	port := -1
	if a := s.tcpAddr(); a != nil {
		port = portOf(a)
	} else if a := s.udpAddr(); a != nil {
		port = portOf(a)
	}
	s.log.Info(fmt.Sprintf("Serving on port %d.", port))

	code := 0
	select {
	case err := <-errc:
		s.log.Error("server failed", "err", err)
		code = 1
	case <-ctx.Done():
		s.log.Info(fmt.Sprintf("Shutting down after receiving signal: %s.", stopReason(ctx)))
		s.log.Info("Awaiting pod deletion.", "linger", s.opts.Linger)
		t := time.NewTimer(s.opts.Linger)
		select {
		case <-t.C:
		case err := <-errc:
			s.log.Error("server failed", "err", err)
			code = 1
		}
		t.Stop()
	}
	if s.srv != nil {
		shutdownHTTP(s.srv, shutdownGrace)
	} else if s.tcpLn != nil {
		s.tcpLn.Close()
	}
	if s.udpConn != nil {
		s.udpConn.Close()
	}
	wg.Wait()
	return code
}

func runServeHostname(ctx context.Context, name string, args []string, o *cmdIO) int {
	fs := newFlagSet(name, o)
	opts := serveHostnameOptions{Linger: serveHostnameLinger, Logger: o.log}
	fs.BoolVar(&opts.TCP, "tcp", false, "serve raw over TCP")
	fs.BoolVar(&opts.UDP, "udp", false, "serve raw over UDP")
	fs.BoolVar(&opts.HTTP, "http", true, "serve HTTP")
	fs.BoolVar(&opts.Close, "close", false, "close the connection after each HTTP request")
	port := fs.Int("port", 9376, "port number")
	positional, err := parseArgs(fs, args)
	if err == nil && len(positional) > 0 {
		err = usageErrorf("unexpected arguments: %q", positional)
	}
	if err != nil {
		return argsExit(o, name, err)
	}
	opts.Addr = net.JoinHostPort("", strconv.Itoa(*port))
	s, err := newServeHostnameServer(opts)
	if err != nil {
		o.errorf(name, "%v", err)
		return 1
	}
	return s.run(ctx)
}
