package dns

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// errUpstreams is returned when every upstream failed.
var errUpstreams = errors.New("no upstream answered")

// Forwarder exchanges queries with upstream servers: over UDP, again over TCP
// when the answer is truncated, trying the next server on a timeout, an error,
// SERVFAIL or REFUSED. Which server goes first rotates, to spread the load.
type Forwarder struct {
	metrics *Metrics
	next    atomic.Uint32
}

// NewForwarder returns a Forwarder that counts errors in m (may be nil).
func NewForwarder(m *Metrics) *Forwarder { return &Forwarder{metrics: m} }

// Exchange sends q to servers until one answers; the answer's ID is q's.
func (f *Forwarder) Exchange(ctx context.Context, q *mdns.Msg, servers []string, timeout time.Duration) (*mdns.Msg, error) {
	if len(servers) == 0 {
		return nil, errUpstreams
	}
	start := int(f.next.Add(1)) % len(servers)
	var errs []error
	for i := range servers {
		if ctx.Err() != nil {
			break
		}
		srv := servers[(start+i)%len(servers)]
		r, err := exchangeOne(ctx, q, srv, timeout)
		if err == nil && (r.Rcode == mdns.RcodeServerFailure || r.Rcode == mdns.RcodeRefused) {
			err = fmt.Errorf("rcode %s", mdns.RcodeToString[r.Rcode])
		}
		if err != nil {
			if f.metrics != nil {
				f.metrics.upstreamErrors.WithLabelValues(srv).Inc()
			}
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			continue
		}
		r.Id = q.Id
		return r, nil
	}
	return nil, fmt.Errorf("%w: %w", errUpstreams, errors.Join(errs...))
}

func exchangeOne(ctx context.Context, q *mdns.Msg, srv string, timeout time.Duration) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := q.Copy()
	out.Id = mdns.Id()
	udp := &mdns.Client{Net: "udp", UDPSize: ednsSize, Timeout: timeout}
	r, _, err := udp.ExchangeContext(ctx, out, srv)
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		tcp := &mdns.Client{Net: "tcp", Timeout: timeout}
		if r, _, err = tcp.ExchangeContext(ctx, out, srv); err != nil {
			return nil, fmt.Errorf("tcp after truncation: %w", err)
		}
	}
	if r.Id != out.Id {
		return nil, errors.New("answer with another ID")
	}
	return r, nil
}
