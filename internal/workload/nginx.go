package workload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// nginx answers like the nginx image with its default configuration: the
// "Welcome to nginx!" page at / and /index.html, /50x.html, and nginx's own
// error pages for everything else.

// nginxVersion is the nginx release both nginx and hello claim to be.
const nginxVersion = "1.27.5"

const nginxServerHeader = "nginx/" + nginxVersion

// nginxFilesModTime is the Last-Modified of the default pages (the release's
// packaging time); it also makes their ETag.
var nginxFilesModTime = time.Date(2025, time.April, 16, 12, 1, 11, 0, time.UTC)

// nginxWelcomePage is /usr/share/nginx/html/index.html of the nginx image.
const nginxWelcomePage = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
`

// nginx50xPage is /usr/share/nginx/html/50x.html of the nginx image.
const nginx50xPage = `<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then you should check
the error log for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
`

// nginxFile returns the default site's file served for a request path.
func nginxFile(path string) (string, bool) {
	switch path {
	case "/", "/index.html":
		return nginxWelcomePage, true
	case "/50x.html":
		return nginx50xPage, true
	}
	return "", false
}

// nginxStatusText is nginx's wording of the statuses its error pages show.
func nginxStatusText(code int) string {
	if code == http.StatusMethodNotAllowed {
		return "Not Allowed"
	}
	return http.StatusText(code)
}

// writeNginxError answers nginx's built-in error page for code.
func writeNginxError(w http.ResponseWriter, code int) {
	status := fmt.Sprintf("%d %s", code, nginxStatusText(code))
	body := "<html>\r\n<head><title>" + status + "</title></head>\r\n<body>\r\n" +
		"<center><h1>" + status + "</h1></center>\r\n" +
		"<hr><center>" + nginxServerHeader + "</center>\r\n</body>\r\n</html>\r\n"
	h := w.Header()
	h.Set("Server", nginxServerHeader)
	h.Set("Content-Type", "text/html")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

type nginxOptions struct {
	// Addr is where to listen, e.g. ":80".
	Addr   string
	Logger *slog.Logger
}

// pageServer is an HTTP server for one handler, shared by nginx and hello.
type pageServer struct {
	log *slog.Logger
	ln  net.Listener
	srv *http.Server
}

func newPageServer(addr string, h http.Handler, log *slog.Logger) (*pageServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &pageServer{log: log, ln: ln, srv: newHTTPServer(h, log, pageWriteTimeout)}, nil
}

// addr is the bound address.
func (s *pageServer) addr() net.Addr { return s.ln.Addr() }

// run serves until ctx ends, then stops gracefully and returns 0; it returns 1
// if the server fails.
func (s *pageServer) run(ctx context.Context) int {
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := serveErr(s.srv.Serve(s.ln)); err != nil {
			errc <- err
		}
	})
	s.log.Info("Serving HTTP", "addr", s.addr().String())
	code := 0
	select {
	case <-ctx.Done():
		s.log.Info("Stopping", "reason", stopReason(ctx))
	case err := <-errc:
		s.log.Error("server failed", "err", err)
		code = 1
	}
	shutdownHTTP(s.srv, shutdownGrace)
	wg.Wait()
	return code
}

// nginxHandler serves the default site.
type nginxHandler struct{ log *slog.Logger }

func (h nginxHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.log.Info("request", "method", r.Method, "uri", r.RequestURI, "client", r.RemoteAddr)
	// As nginx's index and static modules: other methods are refused outright,
	// POST only once the file is known to exist.
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		writeNginxError(w, http.StatusMethodNotAllowed)
		return
	}
	page, ok := nginxFile(r.URL.Path)
	if !ok {
		writeNginxError(w, http.StatusNotFound)
		return
	}
	if r.Method == http.MethodPost {
		writeNginxError(w, http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Server", nginxServerHeader)
	hdr.Set("Content-Type", "text/html")
	hdr.Set("ETag", fmt.Sprintf(`"%x-%x"`, nginxFilesModTime.Unix(), len(page)))
	http.ServeContent(w, r, "", nginxFilesModTime, strings.NewReader(page))
}

func newNginxServer(o nginxOptions) (*pageServer, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return newPageServer(o.Addr, nginxHandler{log: o.Logger}, o.Logger)
}

// runPageServer parses --listen and runs the server newServer makes.
func runPageServer(ctx context.Context, name string, args []string, o *cmdIO, newServer func(addr string) (*pageServer, error)) int {
	fs := newFlagSet(name, o)
	listen := fs.String("listen", ":80", "address to serve HTTP on")
	positional, err := parseArgs(fs, args)
	if err == nil && len(positional) > 0 {
		err = usageErrorf("unexpected arguments: %q", positional)
	}
	if err != nil {
		return argsExit(o, name, err)
	}
	s, err := newServer(*listen)
	if err != nil {
		o.errorf(name, "%v", err)
		return 1
	}
	return s.run(ctx)
}

func runNginx(ctx context.Context, name string, args []string, o *cmdIO) int {
	return runPageServer(ctx, name, args, o, func(addr string) (*pageServer, error) {
		return newNginxServer(nginxOptions{Addr: addr, Logger: o.log})
	})
}
