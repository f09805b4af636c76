package tour

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Results is what the tour observed, for tests and `--results FILE`.
type Results struct {
	ClusterIP string   `json:"clusterIP"` // nginx-svc's, as kubectl reports it
	PodIPs    []string `json:"podIPs"`
	NodeIPs   []string `json:"nodeIPs"`
	// HTTPStatus is the status line of `curl -I nginx-svc` from the netshoot pod.
	HTTPStatus string `json:"httpStatus"`
	// NSLookupName and NSLookupAddress are the answer of `nslookup nginx-svc`.
	NSLookupName    string `json:"nslookupName"`
	NSLookupAddress string `json:"nslookupAddress"`
	// CrossNamespaceStatus is the status line of `curl -I nginx.nginx`.
	CrossNamespaceStatus string `json:"crossNamespaceStatus"`
	// ShortNameError is curl's message for `curl nginx` from namespace default.
	ShortNameError string `json:"shortNameError"`
	// Endpoints counts the addresses of nginx-svc after the scale to five.
	Endpoints int `json:"endpoints"`
	// ServerAddresses counts the "Server address" of 30 requests to nginx-svc.
	ServerAddresses map[string]int `json:"serverAddresses"`
	NodePort        int32          `json:"nodePort"`
	// NodePortStatus is the status line seen from outside, per node IP.
	NodePortStatus map[string]string `json:"nodePortStatus"`
	Failures       []string          `json:"failures,omitempty"`
}

func (r *Results) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// statusLine returns the first HTTP status line in curl -I output.
func statusLine(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "HTTP/") {
			return l
		}
	}
	return ""
}

// statusOK reports whether a status line says 200.
func statusOK(line string) bool {
	f := strings.Fields(line)
	return len(f) >= 2 && f[1] == "200"
}

// parseNSLookup returns the first Name and the Address that follows it in
// nslookup's answer section (the lines before the first blank line name the
// server, not the answer).
func parseNSLookup(out string) (name, addr string) {
	inAnswer := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "":
			inAnswer = true
		case inAnswer && strings.HasPrefix(l, "Name:") && name == "":
			name = strings.TrimSpace(strings.TrimPrefix(l, "Name:"))
		case inAnswer && name != "" && strings.HasPrefix(l, "Address:") && addr == "":
			addr = strings.TrimSpace(strings.TrimPrefix(l, "Address:"))
		}
	}
	return name, addr
}

var serverAddressRE = regexp.MustCompile(`Server(?:&nbsp;| )address:(?:</span>)?\s*(?:<span>)?([^<\s]+)`)

// countServerAddresses counts, in `uniq -c` output of the hello page's
// "Server address" lines, how often each address answered.
func countServerAddresses(out string, into map[string]int) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		m := serverAddressRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n := 1
		if f := strings.Fields(l); len(f) > 1 {
			if c, err := strconv.Atoi(f[0]); err == nil {
				n = c
			}
		}
		into[m[1]] += n
	}
}

// countEndpointAddresses counts the addresses in `kubectl describe endpoints`
// output ("Addresses: a,b,c" lines of each subset).
func countEndpointAddresses(out string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(l, "Addresses:") {
			continue
		}
		v := strings.TrimSpace(strings.TrimPrefix(l, "Addresses:"))
		if v == "" || v == "<none>" {
			continue
		}
		n += len(strings.Split(v, ","))
	}
	return n
}
