package dns

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// fakeWriter is a ResponseWriter from a client address.
type fakeWriter struct {
	mdns.ResponseWriter
	remote net.Addr
	msg    *mdns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(10, 96, 0, 10), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr       { return w.remote }
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error { w.msg = m; return nil }

// TestQueryLogPerNamespace: queries are logged only for the namespaces switched
// on, and the switch applies on the next query after a reload.
func TestQueryLogPerNamespace(t *testing.T) {
	var buf bytes.Buffer
	z := NewZone(specCluster(), nil, quietLog())
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Defaults(), z, specPods, nil, slog.New(slog.NewTextHandler(&buf, nil)))
	ask := func(client string) {
		req := new(mdns.Msg)
		req.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
		w := &fakeWriter{remote: &net.UDPAddr{IP: net.ParseIP(client), Port: 5000}}
		h.ServeDNS(w, req)
		if w.msg == nil || len(w.msg.Answer) != 1 {
			t.Fatalf("no answer: %v", w.msg)
		}
	}
	ask("10.244.1.50")
	if buf.Len() != 0 {
		t.Errorf("logged with the log off: %s", buf.String())
	}
	cfg := Defaults()
	cfg.LogNamespaces = map[string]bool{"ns1": true}
	h.SetConfig(cfg)
	ask("10.244.1.50") // a pod of ns1
	ask("10.9.9.9")    // not a pod
	out := buf.String()
	if strings.Count(out, "msg=query") != 1 || !strings.Contains(out, "namespace=ns1") || !strings.Contains(out, "rcode=NOERROR") {
		t.Errorf("log:\n%s", out)
	}
}
