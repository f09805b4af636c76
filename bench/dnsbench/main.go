// Command dnsbench measures DNS servers: `load` sends a fixed query mix over UDP
// from closed-loop clients (bounded in count and time) and reports queries per
// second and latency percentiles; `search` walks a resolver's search path the
// way glibc does with ndots:5 and counts the round trips per name; `upstream`
// is a tiny authoritative server answering every A query with 192.0.2.1 (an
// upstream that stays inside the lab); `populate` creates Services and
// EndpointSlices in an apiserver. Addresses must be loopback or lab ones.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dnsbench load|search|upstream|populate [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "load":
		err = load(os.Args[2:])
	case "search":
		err = search(os.Args[2:])
	case "upstream":
		err = upstream(os.Args[2:])
	case "populate":
		err = populate(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

// load: -server ADDR -names "A:name,SRV:name,..." -clients N -duration D -max N.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	server := fs.String("server", "127.0.0.1:53", "server address (loopback or lab only)")
	mix := fs.String("mix", "", "comma-separated TYPE:name queries, sent in turn")
	clients := fs.Int("clients", 4, "concurrent closed-loop clients")
	duration := fs.Duration("duration", 10*time.Second, "at most this long")
	maxQ := fs.Int("max", 2_000_000, "at most this many queries")
	timeout := fs.Duration("timeout", time.Second, "per query")
	_ = fs.Parse(args)
	var queries [][]byte
	for _, q := range strings.Split(*mix, ",") {
		t, name, ok := strings.Cut(strings.TrimSpace(q), ":")
		if !ok {
			return fmt.Errorf("query %q: want TYPE:name", q)
		}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), mdns.StringToType[strings.ToUpper(t)])
		b, err := m.Pack()
		if err != nil {
			return err
		}
		queries = append(queries, b)
	}
	var sent, failed atomic.Int64
	lat := make([][]time.Duration, *clients)
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("udp", *server)
			if err != nil {
				failed.Add(1)
				return
			}
			defer conn.Close()
			buf := make([]byte, 4096)
			for i := c; time.Now().Before(deadline); i++ {
				if sent.Add(1) > int64(*maxQ) {
					return
				}
				q := queries[i%len(queries)]
				id := uint16(i)
				q[0], q[1] = byte(id>>8), byte(id)
				t0 := time.Now()
				if _, err := conn.Write(q); err != nil {
					failed.Add(1)
					continue
				}
				_ = conn.SetReadDeadline(t0.Add(*timeout))
				for {
					n, err := conn.Read(buf)
					if err != nil {
						failed.Add(1)
						break
					}
					if n >= 2 && buf[0] == byte(id>>8) && buf[1] == byte(id) {
						lat[c] = append(lat[c], time.Since(t0))
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return fmt.Errorf("no answers from %s (%d failed)", *server, failed.Load())
	}
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	fmt.Printf("answered=%d failed=%d seconds=%.1f qps=%.0f p50_us=%d p99_us=%d\n", len(all), failed.Load(), took.Seconds(),
		float64(len(all))/took.Seconds(), pct(0.50).Microseconds(), pct(0.99).Microseconds())
	return nil
}

// search: resolve names as glibc does with ndots:5 (A then AAAA per search
// candidate, stop at the first candidate that is not NXDOMAIN) and count round trips.
func search(args []string) error {
	fs := flag.NewFlagSet("search", flag.ExitOnError)
	server := fs.String("server", "", "server address (default: the first nameserver of /etc/resolv.conf)")
	names := fs.String("names", "", "comma-separated names as a program would ask them")
	_ = fs.Parse(args)
	conf, err := mdns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return err
	}
	if *server == "" {
		*server = net.JoinHostPort(conf.Servers[0], conf.Port)
	}
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
	for _, name := range strings.Split(*names, ",") {
		trips := 0
		answer := "NXDOMAIN"
		for _, cand := range conf.NameList(name) {
			rcode := -1
			var got []string
			for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
				m := new(mdns.Msg)
				m.SetQuestion(cand, t)
				r, _, err := c.Exchange(m, *server)
				trips++
				if err != nil {
					return fmt.Errorf("%s: %w", cand, err)
				}
				if rcode != mdns.RcodeSuccess {
					rcode = r.Rcode
				}
				for _, rr := range r.Answer {
					if a, ok := rr.(*mdns.A); ok {
						got = append(got, a.A.String())
					}
				}
			}
			if rcode == mdns.RcodeSuccess {
				answer = strings.Join(got, " ")
				break
			}
		}
		fmt.Printf("name=%s round_trips=%d answer=%q\n", name, trips, answer)
	}
	return nil
}

// upstream: answer A with 192.0.2.1 for every name, NODATA otherwise.
func upstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", ":53", "UDP address")
	lifetime := fs.Duration("lifetime", time.Hour, "exit after this long")
	_ = fs.Parse(args)
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		soa := &mdns.SOA{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60}, Ns: "ns.", Mbox: "h.", Serial: 1, Minttl: 60}
		if q.Qtype == mdns.TypeA {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
		} else {
			m.Ns = []mdns.RR{soa}
		}
		_ = w.WriteMsg(m)
	})
	srv := &mdns.Server{Addr: *listen, Net: "udp", Handler: h}
	go func() { time.Sleep(*lifetime); _ = srv.Shutdown() }()
	return srv.ListenAndServe()
}
