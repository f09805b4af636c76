package workload

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startNetexec builds a netexec server on loopback with a UDP server (unless
// the options name their own) and runs it until the test ends.
func startNetexec(t *testing.T, o netexecOptions) (*netexecServer, *running) {
	t.Helper()
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.UDPAddrs == nil {
		o.UDPAddrs = []string{"127.0.0.1:0"}
	}
	if o.SCTPPort == 0 {
		o.SCTPPort = -1
	}
	if o.UploadDir == "" {
		o.UploadDir = t.TempDir()
	}
	s, err := newNetexecServer(o)
	if err != nil {
		t.Fatalf("newNetexecServer: %v", err)
	}
	return s, startRun(t, s.run)
}

func TestNetexecHTTPEndpoints(t *testing.T) {
	s, _ := startNetexec(t, netexecOptions{Hostname: "netexec-pod"})
	addr := s.httpAddr().String()

	tests := []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		wantStatus int
		wantBody   *regexp.Regexp // whole body; nil: check decides
		check      func(t *testing.T, r rawResponse)
	}{
		{name: "root", target: "/", wantStatus: 200, wantBody: regexp.MustCompile(`^NOW: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [+-]\d{4} \S+`)},
		{name: "unknown path is root", target: "/no/such/path", wantStatus: 200, wantBody: regexp.MustCompile(`^NOW: `)},
		{name: "clientip", target: "/clientip", wantStatus: 200, check: func(t *testing.T, r rawResponse) {
			if r.body != r.local {
				t.Errorf("body %q, want the client address %q", r.body, r.local)
			}
		}},
		{name: "header key", target: "/header?key=X-Forwarded-For", header: map[string]string{"X-Forwarded-For": "10.1.2.3"}, wantStatus: 200, wantBody: regexp.MustCompile(`^10\.1\.2\.3$`)},
		{name: "header key absent", target: "/header?key=X-Nope", wantStatus: 200, wantBody: regexp.MustCompile(`^$`)},
		{name: "header all", target: "/header", header: map[string]string{"X-Test": "abc"}, wantStatus: 200, check: func(t *testing.T, r rawResponse) {
			var h map[string][]string
			if err := json.Unmarshal([]byte(r.body), &h); err != nil {
				t.Fatalf("body %q: %v", r.body, err)
			}
			if !slices.Equal(h["X-Test"], []string{"abc"}) || !slices.Equal(h["User-Agent"], []string{"workload-test"}) {
				t.Errorf("headers %v lack X-Test/User-Agent", h)
			}
		}},
		{name: "echo", target: "/echo?msg=hello%20world", wantStatus: 200, wantBody: regexp.MustCompile(`^hello world$`)},
		{name: "echo code", target: "/echo?msg=teapot&code=418", wantStatus: 418, wantBody: regexp.MustCompile(`^teapot$`)},
		{name: "echo bad code", target: "/echo?msg=x&code=abc", wantStatus: 200, wantBody: regexp.MustCompile(`^argument 'code' must be an integer or empty, got "abc"\n$`)},
		{name: "echo unsendable code", target: "/echo?msg=x&code=42", wantStatus: 200, wantBody: regexp.MustCompile(`^argument 'code' must be an integer or empty, got "42"\n$`)},
		{name: "healthz", target: "/healthz", wantStatus: 200, wantBody: regexp.MustCompile(`^$`)},
		{name: "readyz", target: "/readyz", wantStatus: 200, wantBody: regexp.MustCompile(`^ok$`)},
		{name: "hostname", target: "/hostname", wantStatus: 200, wantBody: regexp.MustCompile(`^netexec-pod$`)},
		{name: "hostName", target: "/hostName", wantStatus: 200, wantBody: regexp.MustCompile(`^netexec-pod$`)},
		{name: "redirect default", target: "/redirect?location=/echo%3Fmsg%3Dfoo", wantStatus: 302, check: func(t *testing.T, r rawResponse) {
			if got := r.header.Get("Location"); got != "/echo?msg=foo" {
				t.Errorf("Location %q", got)
			}
		}},
		{name: "redirect code", target: "/redirect?location=http://example.invalid/x&code=307", wantStatus: 307, check: func(t *testing.T, r rawResponse) {
			if got := r.header.Get("Location"); got != "http://example.invalid/x" {
				t.Errorf("Location %q", got)
			}
		}},
		{name: "redirect bad code", target: "/redirect?location=/&code=x", wantStatus: 200, wantBody: regexp.MustCompile(`^argument 'code' must be an integer or empty, got "x"\n$`)},
		{name: "shell disabled", target: "/shell?cmd=id", wantStatus: 403, wantBody: regexp.MustCompile(`disabled.*AMIME_NETEXEC_SHELL=1`)},
		{name: "upload without file", method: "POST", target: "/upload", wantStatus: 200, wantBody: regexp.MustCompile(`^\{"error":"Unable to upload file\."\}$`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			r := rawRequest(t, addr, method, tt.target, tt.header)
			if r.status != tt.wantStatus {
				t.Errorf("status %d, want %d (body %q)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantBody != nil && !tt.wantBody.MatchString(r.body) {
				t.Errorf("body %q does not match %v", r.body, tt.wantBody)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestNetexecDefaultHostname(t *testing.T) {
	want, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	s, _ := startNetexec(t, netexecOptions{})
	if r := get(t, s.httpAddr().String(), "/hostname"); r.body != want {
		t.Fatalf("/hostname = %q, want os.Hostname() %q", r.body, want)
	}
}

func TestNetexecShell(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	s, _ := startNetexec(t, netexecOptions{EnableShell: true})
	addr := s.httpAddr().String()
	tests := []struct {
		target string
		want   map[string]string
	}{
		{target: "/shell?cmd=" + url.QueryEscape("echo hi"), want: map[string]string{"output": "hi\n"}},
		{target: "/shell?shellCommand=" + url.QueryEscape("echo sc") + "&cmd=" + url.QueryEscape("echo cmd"), want: map[string]string{"output": "sc\n"}},
		{target: "/shell?cmd=" + url.QueryEscape("exit 3"), want: map[string]string{"error": "exit status 3"}},
		{target: "/shell?cmd=" + url.QueryEscape("echo out; exit 1"), want: map[string]string{"output": "out\n", "error": "exit status 1"}},
	}
	for _, tt := range tests {
		r := get(t, addr, tt.target)
		var got map[string]string
		if err := json.Unmarshal([]byte(r.body), &got); err != nil {
			t.Fatalf("%s: body %q: %v", tt.target, r.body, err)
		}
		if r.status != 200 || len(got) != len(tt.want) || got["output"] != tt.want["output"] || got["error"] != tt.want["error"] {
			t.Errorf("%s: %d %v, want 200 %v", tt.target, r.status, got, tt.want)
		}
	}
}

func TestShellEnabledEnv(t *testing.T) {
	for _, tt := range []struct {
		val  string
		want bool
	}{{"", false}, {"0", false}, {"yes", false}, {"1", true}, {"true", true}} {
		t.Setenv(shellEnv, tt.val)
		if got := shellEnabled(); got != tt.want {
			t.Errorf("%s=%q: shellEnabled() = %v, want %v", shellEnv, tt.val, got, tt.want)
		}
	}
}

func TestNetexecUpload(t *testing.T) {
	dir := t.TempDir()
	s, _ := startNetexec(t, netexecOptions{UploadDir: filepath.Join(dir, "uploads")})
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", "payload.bin")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte("uploaded content"))
	mw.Close()
	resp, err := http.Post("http://"+s.httpAddr().String()+"/upload", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d, body %q", resp.StatusCode, b)
	}
	var out map[string]string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	path := out["output"]
	if filepath.Dir(path) != filepath.Join(dir, "uploads") || out["error"] != "" {
		t.Fatalf("answer %v: want a file in %s", out, filepath.Join(dir, "uploads"))
	}
	content, err := os.ReadFile(path)
	if err != nil || string(content) != "uploaded content" {
		t.Fatalf("uploaded file: %q, %v", content, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("uploaded file mode: %v, %v", fi.Mode(), err)
	}
}

func TestNetexecHTTPOverride(t *testing.T) {
	s, _ := startNetexec(t, netexecOptions{HTTPOverride: "/echo?msg=overridden&code=202"})
	for _, target := range []string{"/", "/hostname", "/exit?code=3", "/anything?msg=x"} {
		r := get(t, s.httpAddr().String(), target)
		if r.status != 202 || r.body != "overridden" {
			t.Errorf("GET %s = %d %q, want 202 %q", target, r.status, r.body, "overridden")
		}
	}
}

func TestNetexecUDP(t *testing.T) {
	s, _ := startNetexec(t, netexecOptions{Hostname: "udp-pod"})
	conn, err := net.DialUDP("udp", nil, s.udpAddr(0).(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tests := []struct {
		send    string
		want    string
		noReply bool
	}{
		{send: "hostname", want: "udp-pod"},
		{send: "  HostName\n", want: "udp-pod"},
		{send: "echo hello", want: "hello"},
		{send: "echo Hello World\n", want: "hello world"}, // agnhost lower-cases the whole datagram
		{send: "clientip", want: conn.LocalAddr().String()},
		{send: "CLIENTIP\n", want: conn.LocalAddr().String()},
		{send: "echo", noReply: true}, // trimmed to "echo", without the space
		{send: "bogus", noReply: true},
		{send: "\n", noReply: true},
	}
	buf := make([]byte, 2048)
	for _, tt := range tests {
		if _, err := conn.Write([]byte(tt.send)); err != nil {
			t.Fatal(err)
		}
		wait := 2 * time.Second
		if tt.noReply {
			wait = 200 * time.Millisecond
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		n, err := conn.Read(buf)
		if tt.noReply {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%q: got %q, %v; want no reply", tt.send, buf[:n], err)
			}
			continue
		}
		if err != nil || string(buf[:n]) != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.send, buf[:n], err, tt.want)
		}
	}
}

func TestNetexecDial(t *testing.T) {
	target, _ := startNetexec(t, netexecOptions{Hostname: "target-pod"})
	s, _ := startNetexec(t, netexecOptions{Hostname: "dialer-pod"})
	addr := s.httpAddr().String()
	tcpPort := strconv.Itoa(portOf(target.httpAddr()))
	udpPort := strconv.Itoa(portOf(target.udpAddr(0)))
	closedTCP := strconv.Itoa(closedPort(t))
	closedUDP := strconv.Itoa(closedUDPPort(t))

	dial := func(params ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(params); i += 2 {
			v.Set(params[i], params[i+1])
		}
		return "/dial?" + v.Encode()
	}
	tests := []struct {
		name       string
		target     string
		wantStatus int
		wantBody   string // exact, unless check is set
		check      func(t *testing.T, res map[string][]string)
	}{
		{name: "http hostname", target: dial("request", "hostname", "protocol", "http", "host", "127.0.0.1", "port", tcpPort, "tries", "3"),
			wantStatus: 200, wantBody: `{"responses":["target-pod","target-pod","target-pod"]}`},
		{name: "http default protocol and tries", target: dial("request", "hostName", "host", "127.0.0.1", "port", tcpPort),
			wantStatus: 200, wantBody: `{"responses":["target-pod"]}`},
		{name: "http request with query", target: dial("request", "echo?msg=via-dial", "host", "127.0.0.1", "port", tcpPort),
			wantStatus: 200, wantBody: `{"responses":["via-dial"]}`},
		{name: "http request with leading slash", target: dial("request", "/hostname", "host", "127.0.0.1", "port", tcpPort),
			wantStatus: 200, wantBody: `{"responses":["target-pod"]}`},
		{name: "http clientip is the dialer", target: dial("request", "clientip", "host", "127.0.0.1", "port", tcpPort),
			wantStatus: 200, check: func(t *testing.T, res map[string][]string) {
				if len(res["responses"]) != 1 || !strings.HasPrefix(res["responses"][0], "127.0.0.1:") {
					t.Errorf("responses %q", res["responses"])
				}
			}},
		{name: "udp hostname", target: dial("request", "hostname", "protocol", "udp", "host", "127.0.0.1", "port", udpPort, "tries", "2"),
			wantStatus: 200, wantBody: `{"responses":["target-pod","target-pod"]}`},
		{name: "udp echo", target: dial("request", "echo hello", "protocol", "UDP", "host", "127.0.0.1", "port", udpPort),
			wantStatus: 200, wantBody: `{"responses":["hello"]}`},
		{name: "http refused", target: dial("request", "hostname", "host", "127.0.0.1", "port", closedTCP, "tries", "2"),
			wantStatus: 200, check: func(t *testing.T, res map[string][]string) {
				if _, ok := res["responses"]; ok || len(res["errors"]) != 2 || !strings.Contains(res["errors"][0], "connection refused") {
					t.Errorf("got %q, want two refused errors and no responses", res)
				}
			}},
		{name: "udp refused", target: dial("request", "hostname", "protocol", "udp", "host", "127.0.0.1", "port", closedUDP),
			wantStatus: 200, check: func(t *testing.T, res map[string][]string) {
				if _, ok := res["responses"]; ok || len(res["errors"]) != 1 ||
					!strings.HasPrefix(res["errors"][0], "reading from udp connection failed. err:'") || !strings.Contains(res["errors"][0], "connection refused") {
					t.Errorf("got %q, want one UDP read error and no responses", res)
				}
			}},
		{name: "sctp", target: dial("request", "hostname", "protocol", "sctp", "host", "127.0.0.1", "port", "9999"),
			wantStatus: 200, wantBody: `{"errors":["sctp dial failed. err:protocol not supported"]}`},
		{name: "zero tries", target: dial("request", "hostname", "host", "127.0.0.1", "port", tcpPort, "tries", "0"),
			wantStatus: 200, wantBody: `{}`},
		{name: "no request", target: dial("host", "127.0.0.1", "port", tcpPort),
			wantStatus: 400, wantBody: "request parameter not specified. <nil>\n"},
		{name: "bad tries", target: dial("request", "hostname", "host", "127.0.0.1", "port", tcpPort, "tries", "x"),
			wantStatus: 400, wantBody: "tries parameter is invalid. strconv.Atoi: parsing \"x\": invalid syntax\n"},
		{name: "bad protocol", target: dial("request", "hostname", "protocol", "ftp", "host", "127.0.0.1", "port", tcpPort),
			wantStatus: 400, wantBody: "unsupported protocol. ftp\n"},
		{name: "bad port", target: dial("request", "hostname", "host", "127.0.0.1", "port", "no-such-service-xyz"),
			wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, addr, tt.target)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", r.status, tt.wantStatus, r.body)
			}
			switch {
			case tt.check != nil:
				var res map[string][]string
				if err := json.Unmarshal([]byte(r.body), &res); err != nil {
					t.Fatalf("body %q: %v", r.body, err)
				}
				tt.check(t, res)
			case tt.name == "bad port":
				if !strings.HasPrefix(r.body, "host and/or port param are invalid. ") {
					t.Errorf("body %q", r.body)
				}
			case r.body != tt.wantBody:
				t.Errorf("body %q, want %q", r.body, tt.wantBody)
			}
		})
	}
}

func TestDialResultsMarshal(t *testing.T) {
	type try struct {
		resp string
		err  error
	}
	boom := errors.New("boom")
	tests := []struct {
		name  string
		tries []try
		want  string
	}{
		{name: "none", want: `{}`},
		{name: "all answered", tries: []try{{resp: "a"}, {resp: "b"}}, want: `{"responses":["a","b"]}`},
		{name: "all failed", tries: []try{{err: boom}, {err: boom}}, want: `{"errors":["boom","boom"]}`},
		{name: "last answered", tries: []try{{err: boom}, {resp: "a"}}, want: `{"errors":["boom"],"responses":["a"]}`},
		// As agnhost: a failing last try hides the earlier answers.
		{name: "last failed", tries: []try{{resp: "a"}, {err: boom}}, want: `{"errors":["boom"]}`},
		{name: "last answer empty", tries: []try{{resp: "a"}, {resp: ""}}, want: `{}`},
		{name: "html escaped", tries: []try{{resp: "<b>&"}}, want: `{"responses":["\u003cb\u003e\u0026"]}`},
	}
	for _, tt := range tests {
		var d dialResults
		for _, tr := range tt.tries {
			d.add(tr.resp, tr.err)
		}
		b, err := d.marshal()
		if err != nil || string(b) != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.name, b, err, tt.want)
		}
	}
}

func TestNetexecExit(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		wantCode   int
		wantStatus int
		minElapsed time.Duration
	}{
		{name: "code", target: "/exit?code=3", wantCode: 3, wantStatus: 200},
		{name: "default code", target: "/exit", wantCode: 0, wantStatus: 200},
		{name: "graceful", target: "/exit?code=4&timeout=2s", wantCode: 4, wantStatus: 200},
		{name: "wait", target: "/exit?code=5&wait=300ms", wantCode: 5, wantStatus: 200, minElapsed: 300 * time.Millisecond},
		{name: "shutdown", target: "/shutdown", wantCode: 0, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, r := startNetexec(t, netexecOptions{})
			start := time.Now()
			resp := get(t, s.httpAddr().String(), tt.target)
			if resp.status != tt.wantStatus || resp.body != "" {
				t.Errorf("answer %d %q, want %d and no body", resp.status, resp.body, tt.wantStatus)
			}
			if code := r.wait(t, 5*time.Second); code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if el := time.Since(start); el < tt.minElapsed {
				t.Errorf("exited after %v, want at least %v", el, tt.minElapsed)
			}
			if c, err := net.DialTimeout("tcp", s.httpAddr().String(), time.Second); err == nil {
				c.Close()
				t.Errorf("HTTP port still open after exit")
			}
		})
	}
}

func TestNetexecExitBadArguments(t *testing.T) {
	s, r := startNetexec(t, netexecOptions{})
	tests := []struct{ target, want string }{
		{"/exit?code=abc", "argument 'code' must be an integer [0-127] or empty, got \"abc\"\n"},
		{"/exit?timeout=abc", "argument 'timeout' must be a valid golang duration or empty, got \"abc\"\n"},
		{"/exit?wait=abc", "argument 'wait' must be a valid golang duration or empty, got \"abc\"\n"},
	}
	for _, tt := range tests {
		if resp := get(t, s.httpAddr().String(), tt.target); resp.status != 200 || resp.body != tt.want {
			t.Errorf("GET %s = %d %q, want 200 %q", tt.target, resp.status, resp.body, tt.want)
		}
	}
	if r.ended() {
		t.Fatal("server exited on a bad /exit request")
	}
	r.signal(syscall.SIGTERM)
	if code := r.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM %d, want 0", code)
	}
}

func TestNetexecDelayShutdown(t *testing.T) {
	const delay = 500 * time.Millisecond
	s, r := startNetexec(t, netexecOptions{DelayShutdown: delay})
	addr := s.httpAddr().String()
	if resp := get(t, addr, "/readyz"); resp.status != 200 {
		t.Fatalf("/readyz before SIGTERM: %d", resp.status)
	}
	start := time.Now()
	r.signal(syscall.SIGTERM)
	deadline := time.Now().Add(delay / 2)
	var ready rawResponse
	for {
		ready = get(t, addr, "/readyz")
		if ready.status != 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ready.status != 503 || ready.body != "shutting down" {
		t.Fatalf("/readyz during the delay: %d %q, want 503 %q", ready.status, ready.body, "shutting down")
	}
	if h := get(t, addr, "/healthz"); h.status != 200 {
		t.Fatalf("/healthz during the delay: %d, want 200", h.status)
	}
	if code := r.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if el := time.Since(start); el < delay {
		t.Fatalf("stopped %v after SIGTERM, want at least %v", el, delay)
	}
}

func TestNetexecWithoutUDP(t *testing.T) {
	s, _ := startNetexec(t, netexecOptions{UDPAddrs: []string{}})
	for _, target := range []string{"/healthz", "/readyz"} {
		if r := get(t, s.httpAddr().String(), target); r.status != http.StatusPreconditionFailed || r.body != "" {
			t.Errorf("%s without UDP = %d %q, want 412 and no body (as agnhost)", target, r.status, r.body)
		}
	}
}

// TestNetexecSCTPIgnored: asking for SCTP only logs an error.
func TestNetexecSCTPIgnored(t *testing.T) {
	s, _ := startNetexec(t, netexecOptions{SCTPPort: 9999})
	if r := get(t, s.httpAddr().String(), "/healthz"); r.status != 200 {
		t.Fatalf("/healthz = %d, want 200", r.status)
	}
}

func TestNetexecTLS(t *testing.T) {
	cert, key := writeTestCert(t)
	s, _ := startNetexec(t, netexecOptions{TLSCertFile: cert, TLSKeyFile: key, Hostname: "tls-pod"})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + s.httpAddr().String() + "/hostname")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.TLS == nil || string(body) != "tls-pod" {
		t.Fatalf("HTTPS /hostname = %q (TLS %v), want %q over TLS", body, resp.TLS != nil, "tls-pod")
	}
	// Plain HTTP to the HTTPS port fails.
	if r := get(t, s.httpAddr().String(), "/hostname"); r.status != http.StatusBadRequest {
		t.Fatalf("plain HTTP to the HTTPS port: %d, want 400", r.status)
	}
}

func TestNetexecConstructorErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyUDP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	tests := []struct {
		name string
		opts netexecOptions
		want string
	}{
		{name: "http port in use", opts: netexecOptions{HTTPAddr: busy.Addr().String()}, want: "listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{name: "udp port in use", opts: netexecOptions{HTTPAddr: "127.0.0.1:0", UDPAddrs: []string{busyUDP.LocalAddr().String()}}, want: "address already in use"},
		{name: "missing certificate", opts: netexecOptions{HTTPAddr: "127.0.0.1:0", TLSCertFile: filepath.Join(t.TempDir(), "nope.crt")}, want: "load TLS certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newNetexecServer(tt.opts)
			if err == nil {
				s.closeListeners()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestRunNetexecPortInUse runs netexec from its command line on a port that is
// taken: it must fail at once with exit 1 and a clear message.
func TestRunNetexecPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := strconv.Itoa(portOf(busy.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"netexec", "--http-port", port, "--udp-port=-1"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stderr %q", code, stderr.String())
	}
	want := "netexec: listen tcp :" + port + ": bind: address already in use\n"
	if stderr.String() != want {
		t.Fatalf("stderr %q, want %q", stderr.String(), want)
	}
}

func TestNetexecFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want netexecOptions
	}{
		{name: "defaults", args: nil, want: netexecOptions{HTTPAddr: ":8080", UDPAddrs: []string{":8081"}, SCTPPort: -1}},
		{name: "ports, both flag forms", args: []string{"--http-port", "9090", "--udp-port=9091", "--sctp-port=9092"},
			want: netexecOptions{HTTPAddr: ":9090", UDPAddrs: []string{":9091"}, SCTPPort: 9092}},
		{name: "udp disabled", args: []string{"--udp-port=-1"}, want: netexecOptions{HTTPAddr: ":8080", SCTPPort: -1}},
		{name: "udp disabled, space form", args: []string{"--udp-port", "-1"}, want: netexecOptions{HTTPAddr: ":8080", SCTPPort: -1}},
		{name: "udp listen addresses", args: []string{"--udp-listen-addresses=::1,127.0.0.1,::1"},
			want: netexecOptions{HTTPAddr: ":8080", UDPAddrs: []string{"127.0.0.1:8081", "[::1]:8081"}, SCTPPort: -1}},
		{name: "the rest", args: []string{"--delay-shutdown=7", "--http-override=/hostname", "--tls-cert-file=/c", "--tls-private-key-file=/k"},
			want: netexecOptions{HTTPAddr: ":8080", UDPAddrs: []string{":8081"}, SCTPPort: -1, DelayShutdown: 7 * time.Second,
				HTTPOverride: "/hostname", TLSCertFile: "/c", TLSKeyFile: "/k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("netexec", &cmdIO{stderr: io.Discard})
			got, err := netexecFlags(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if got.HTTPAddr != tt.want.HTTPAddr || !slices.Equal(got.UDPAddrs, tt.want.UDPAddrs) || got.SCTPPort != tt.want.SCTPPort ||
				got.DelayShutdown != tt.want.DelayShutdown || got.HTTPOverride != tt.want.HTTPOverride ||
				got.TLSCertFile != tt.want.TLSCertFile || got.TLSKeyFile != tt.want.TLSKeyFile {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
