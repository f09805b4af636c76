package workload

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNginxPages(t *testing.T) {
	if len(nginxWelcomePage) != 615 {
		t.Fatalf("welcome page is %d bytes, the image's is 615", len(nginxWelcomePage))
	}
	if len(nginx50xPage) != 497 {
		t.Fatalf("50x page is %d bytes, the image's is 497", len(nginx50xPage))
	}
	s, err := newNginxServer(nginxOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, s.run)
	addr := s.addr().String()
	etag := fmt.Sprintf(`"%x-267"`, nginxFilesModTime.Unix())
	errorPage := func(status string) string {
		return "<html>\r\n<head><title>" + status + "</title></head>\r\n<body>\r\n<center><h1>" + status +
			"</h1></center>\r\n<hr><center>nginx/" + nginxVersion + "</center>\r\n</body>\r\n</html>\r\n"
	}

	tests := []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		wantStatus int
		wantBody   string
		wantHeader map[string]string
	}{
		{name: "root", method: "GET", target: "/", wantStatus: 200, wantBody: nginxWelcomePage,
			wantHeader: map[string]string{"Content-Type": "text/html", "Content-Length": "615", "ETag": etag,
				"Last-Modified": nginxFilesModTime.Format(http.TimeFormat), "Accept-Ranges": "bytes"}},
		{name: "index.html", method: "GET", target: "/index.html?x=1", wantStatus: 200, wantBody: nginxWelcomePage},
		{name: "head", method: "HEAD", target: "/", wantStatus: 200, wantBody: "", wantHeader: map[string]string{"Content-Length": "615"}},
		{name: "50x", method: "GET", target: "/50x.html", wantStatus: 200, wantBody: nginx50xPage},
		{name: "not found", method: "GET", target: "/nope", wantStatus: 404, wantBody: errorPage("404 Not Found"),
			wantHeader: map[string]string{"Content-Type": "text/html"}},
		{name: "not found dir", method: "GET", target: "/dir/", wantStatus: 404, wantBody: errorPage("404 Not Found")},
		{name: "post existing", method: "POST", target: "/", wantStatus: 405, wantBody: errorPage("405 Not Allowed")},
		{name: "post missing", method: "POST", target: "/nope", wantStatus: 404, wantBody: errorPage("404 Not Found")},
		{name: "delete", method: "DELETE", target: "/nope", wantStatus: 405, wantBody: errorPage("405 Not Allowed")},
		{name: "conditional etag", method: "GET", target: "/", header: map[string]string{"If-None-Match": etag}, wantStatus: 304, wantBody: ""},
		{name: "range", method: "GET", target: "/", header: map[string]string{"Range": "bytes=0-14"}, wantStatus: 206, wantBody: "<!DOCTYPE html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawRequest(t, addr, tt.method, tt.target, tt.header)
			if r.status != tt.wantStatus || r.body != tt.wantBody {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.target, r.status, r.body, tt.wantStatus, tt.wantBody)
			}
			if got := r.header.Get("Server"); got != "nginx/"+nginxVersion {
				t.Errorf("Server %q", got)
			}
			for k, v := range tt.wantHeader {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestNginxStops(t *testing.T) {
	s, err := newNginxServer(nginxOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, s.run)
	if g := get(t, s.addr().String(), "/"); !strings.Contains(g.body, "<title>Welcome to nginx!</title>") {
		t.Fatalf("body %q", g.body)
	}
	r.signal(syscall.SIGINT)
	if code := r.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
