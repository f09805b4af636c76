package workload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// hello answers like nginxdemos/hello: for any path, a page showing the
// address and port the request arrived on, the host name, the date, the request
// URI and a request ID. hello-plain answers the same facts as text, like
// nginxdemos/hello:plain-text:
//
//	Server address: 10.244.1.7:80
//	Server name: hello-7d9c
//	Date: 02/Jan/2026:15:04:05 +0000
//	URI: /some/path?x=1
//	Request ID: 5f0c6b2e9a8d4c1f0e3b7a6d5c4b3a29
//
// The HTML page labels its fields as the image does, in separate cells with a
// non-breaking space: "Server&nbsp;address:</span> <span>10.244.1.7:80".

// nginxTimeLocal is the layout of nginx's $time_local.
const nginxTimeLocal = "02/Jan/2006:15:04:05 -0700"

// helloPage is the HTML answer; its %s are, in order, the server address,
// server name, date, URI and request ID, HTML-escaped.
const helloPage = `<!DOCTYPE html>
<html>
<head>
<title>Hello World</title>
<style>
body { margin: 0; font: 20px Arial, sans-serif; color: #0f1419; }
div.info { display: table; margin: 36px auto auto auto; padding: 20px;
  background: #e8eaec; border: 1px dashed black; border-radius: 10px; }
div.info p { display: table-row; }
div.info p span { display: table-cell; padding: 10px; }
div.smaller p span { color: #3d5266; }
#footer { margin-top: 36px; text-align: center; font: 12px Courier, monospace; }
</style>
</head>
<body>
<div class="info">
<p><span>Server&nbsp;address:</span> <span>%s</span></p>
<p><span>Server&nbsp;name:</span> <span>%s</span></p>
<p class="smaller"><span>Date:</span> <span>%s</span></p>
<p class="smaller"><span>URI:</span> <span>%s</span></p>
</div>
<div id="footer">
Request ID: %s
</div>
</body>
</html>
`

type helloOptions struct {
	// Addr is where to listen, e.g. ":80".
	Addr string
	// Plain answers text/plain, as nginxdemos/hello:plain-text.
	Plain bool
	// Hostname is the "Server name"; empty means os.Hostname() at start, as
	// nginx's $hostname.
	Hostname string
	Logger   *slog.Logger
}

// helloFacts are what a hello answer shows, in the order both forms show them.
type helloFacts struct {
	ServerAddress string
	ServerName    string
	Date          string
	URI           string
	RequestID     string
}

func (f helloFacts) plain() string {
	return fmt.Sprintf("Server address: %s\nServer name: %s\nDate: %s\nURI: %s\nRequest ID: %s\n",
		f.ServerAddress, f.ServerName, f.Date, f.URI, f.RequestID)
}

// html fills the page. Unlike the image, which substitutes raw values, the
// values are escaped: the URI is the client's.
func (f helloFacts) html() string {
	e := html.EscapeString
	return fmt.Sprintf(helloPage, e(f.ServerAddress), e(f.ServerName), e(f.Date), e(f.URI), e(f.RequestID))
}

type helloHandler struct {
	plain    bool
	hostname string
	log      *slog.Logger
}

func newHelloServer(o helloOptions) (*pageServer, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := hostnameOr(o.Hostname)
	if err != nil {
		return nil, fmt.Errorf("get hostname: %w", err)
	}
	return newPageServer(o.Addr, helloHandler{plain: o.Plain, hostname: h, log: o.Logger}, o.Logger)
}

// serverAddress is nginx's "$server_addr:$server_port": the local end of the
// connection the request came on, the IP without brackets even for IPv6.
func serverAddress(r *http.Request) string {
	switch a := r.Context().Value(http.LocalAddrContextKey).(type) {
	case *net.TCPAddr:
		return a.IP.String() + ":" + strconv.Itoa(a.Port)
	case net.Addr:
		return a.String()
	}
	return ""
}

// requestID is like nginx's $request_id: 16 random bytes in hex.
func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (h helloHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.log.Info("request", "method", r.Method, "uri", r.RequestURI, "client", r.RemoteAddr)
	// The HTML page is a static file to nginx, which refuses other methods;
	// the plain-text one is a "return 200" that answers them all.
	if !h.plain && r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeNginxError(w, http.StatusMethodNotAllowed)
		return
	}
	f := helloFacts{
		ServerAddress: serverAddress(r),
		ServerName:    h.hostname,
		Date:          time.Now().Format(nginxTimeLocal),
		URI:           r.RequestURI,
		RequestID:     requestID(),
	}
	body, contentType := f.html(), "text/html"
	if h.plain {
		body, contentType = f.plain(), "text/plain"
	}
	hdr := w.Header()
	hdr.Set("Server", nginxServerHeader)
	hdr.Set("Content-Type", contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	// nginx's "expires -1".
	hdr.Set("Expires", time.Now().Add(-time.Second).UTC().Format(http.TimeFormat))
	hdr.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, body)
}

func runHello(ctx context.Context, name string, args []string, o *cmdIO) int {
	return runPageServer(ctx, name, args, o, func(addr string) (*pageServer, error) {
		return newHelloServer(helloOptions{Addr: addr, Logger: o.log})
	})
}

func runHelloPlain(ctx context.Context, name string, args []string, o *cmdIO) int {
	return runPageServer(ctx, name, args, o, func(addr string) (*pageServer, error) {
		return newHelloServer(helloOptions{Addr: addr, Plain: true, Logger: o.log})
	})
}
