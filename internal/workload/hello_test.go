package workload

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startHello(t *testing.T, o helloOptions) *pageServer {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Hostname == "" {
		o.Hostname = "hello-pod"
	}
	s, err := newHelloServer(o)
	if err != nil {
		t.Fatalf("newHelloServer: %v", err)
	}
	startRun(t, s.run)
	return s
}

var (
	plainHelloRE = regexp.MustCompile(`^Server address: (\S+)\nServer name: (\S+)\nDate: (\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\nURI: (\S+)\nRequest ID: ([0-9a-f]{32})\n$`)
	htmlDateRE   = regexp.MustCompile(`<span>Date:</span> <span>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}</span>`)
	htmlIDRE     = regexp.MustCompile(`Request ID: ([0-9a-f]{32})\n`)
)

func TestHelloPlainServer(t *testing.T) {
	s := startHello(t, helloOptions{Plain: true})
	r := get(t, s.addr().String(), "/some/path?x=1&y=2")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	m := plainHelloRE.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("body does not have the plain-text form:\n%s", r.body)
	}
	if m[1] != r.remote {
		t.Errorf("Server address %q, want the server end of the connection %q", m[1], r.remote)
	}
	if m[2] != "hello-pod" || m[4] != "/some/path?x=1&y=2" {
		t.Errorf("Server name %q, URI %q", m[2], m[4])
	}
	if d, err := time.Parse(nginxTimeLocal, m[3]); err != nil || time.Since(d).Abs() > time.Minute {
		t.Errorf("Date %q: %v", m[3], err)
	}
	wantHeaders := map[string]string{"Server": "nginx/" + nginxVersion, "Content-Type": "text/plain", "Cache-Control": "no-cache"}
	for k, v := range wantHeaders {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if _, err := http.ParseTime(r.header.Get("Expires")); err != nil {
		t.Errorf("Expires %q: %v", r.header.Get("Expires"), err)
	}
	// Another request has another ID; any method is answered.
	r2 := rawRequest(t, s.addr().String(), http.MethodPost, "/", nil)
	m2 := plainHelloRE.FindStringSubmatch(r2.body)
	if r2.status != 200 || m2 == nil || m2[5] == m[5] {
		t.Errorf("second request: %d, request IDs %v and %v", r2.status, m[5], m2)
	}
}

func TestHelloHTMLServer(t *testing.T) {
	s := startHello(t, helloOptions{})
	r := get(t, s.addr().String(), "/a?b=<c>&d=1")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	for _, want := range []string{
		"<title>Hello World</title>",
		"<span>Server&nbsp;address:</span> <span>" + r.remote + "</span>",
		"<span>Server&nbsp;name:</span> <span>hello-pod</span>",
		"<span>URI:</span> <span>/a?b=&lt;c&gt;&amp;d=1</span>", // escaped, unlike the image
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q:\n%s", want, r.body)
		}
	}
	if !htmlDateRE.MatchString(r.body) || !htmlIDRE.MatchString(r.body) {
		t.Errorf("page lacks the date or request ID:\n%s", r.body)
	}
	if got := r.header.Get("Server"); got != "nginx/"+nginxVersion {
		t.Errorf("Server %q", got)
	}
	if got := r.header.Get("Content-Type"); got != "text/html" {
		t.Errorf("Content-Type %q", got)
	}
	if cl, _ := strconv.Atoi(r.header.Get("Content-Length")); cl != len(r.body) {
		t.Errorf("Content-Length %d, body %d bytes", cl, len(r.body))
	}

	head := rawRequest(t, s.addr().String(), http.MethodHead, "/", nil)
	if cl, _ := strconv.Atoi(head.header.Get("Content-Length")); head.status != 200 || head.body != "" || cl < 500 {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %d", head.status, len(head.body), cl)
	}
	post := rawRequest(t, s.addr().String(), http.MethodPost, "/", nil)
	if post.status != 405 || !strings.Contains(post.body, "<center><h1>405 Not Allowed</h1></center>") {
		t.Errorf("POST: %d %q", post.status, post.body)
	}
}

func TestHelloIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	s := startHello(t, helloOptions{Plain: true, Addr: "[::1]:0"})
	r := get(t, s.addr().String(), "/")
	m := plainHelloRE.FindStringSubmatch(r.body)
	want := "::1:" + strconv.Itoa(portOf(s.addr()))
	if m == nil || m[1] != want {
		t.Fatalf("body %q: want Server address %q (nginx prints IPv6 without brackets)", r.body, want)
	}
}

// TestHelloServerAddress checks, per request, that the address shown is the
// local end of the connection the request came on, however the server listens.
func TestHelloServerAddress(t *testing.T) {
	tests := []struct {
		local net.Addr
		want  string
	}{
		{local: &net.TCPAddr{IP: net.ParseIP("10.244.1.7"), Port: 80}, want: "10.244.1.7:80"},
		{local: &net.TCPAddr{IP: net.ParseIP("::ffff:10.244.1.7"), Port: 8080}, want: "10.244.1.7:8080"},
		{local: &net.TCPAddr{IP: net.ParseIP("fd00:10:244::7"), Port: 80}, want: "fd00:10:244::7:80"},
	}
	for _, plain := range []bool{true, false} {
		h := helloHandler{plain: plain, hostname: "pod-a", log: slog.New(slog.DiscardHandler)}
		for _, tt := range tests {
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, tt.local))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Result().Body)
			want := "Server address: " + tt.want + "\n"
			if !plain {
				want = "<span>Server&nbsp;address:</span> <span>" + tt.want + "</span>"
			}
			if !strings.Contains(string(body), want) {
				t.Errorf("plain=%v local %v: body lacks %q:\n%s", plain, tt.local, want, body)
			}
		}
	}
}

func TestHelloPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, name := range []string{"hello", "hello-plain", "nginx"} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), []string{name, "--listen", busy.Addr().String()}, &stdout, &stderr)
		want := name + ": listen tcp " + busy.Addr().String() + ": bind: address already in use\n"
		if code != 1 || stderr.String() != want {
			t.Errorf("%s: exit %d, stderr %q; want 1, %q", name, code, stderr.String(), want)
		}
	}
}
