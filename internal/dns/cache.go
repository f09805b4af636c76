package dns

import (
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// staleTTL is the TTL of an answer served past its expiry (RFC 8767 §4
// suggests 30 s), so that clients come back soon for a fresh one.
const staleTTL = 30

type cacheKey struct {
	name          string // lower case
	qtype, qclass uint16
	do            bool
}

type cacheEntry struct {
	msg      *mdns.Msg
	stored   time.Time
	expires  time.Time
	negative bool
}

// Cache holds upstream answers, bounded in entries: when full, an arbitrary
// entry makes room (Go's map order is randomised, which approximates random
// eviction at no bookkeeping cost). Answers of the cluster zone are never
// cached here: they are already in memory.
type Cache struct {
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	size    int
}

// NewCache returns a cache of at most size entries.
func NewCache(size int) *Cache {
	return &Cache{entries: make(map[cacheKey]*cacheEntry), size: size}
}

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// get returns a copy of the cached answer with its TTLs counted down; fresh is
// false for an entry past its expiry but within stale (the caller serves it only
// when upstreams fail).
func (c *Cache) get(k cacheKey, now time.Time, stale time.Duration) (m *mdns.Msg, fresh, negative, ok bool) {
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && now.After(e.expires.Add(stale)) {
		delete(c.entries, k)
		e = nil
	}
	c.mu.Unlock()
	if e == nil {
		return nil, false, false, false
	}
	out := e.msg.Copy()
	fresh = now.Before(e.expires)
	var ttl uint32 = staleTTL
	if fresh {
		ttl = uint32(e.expires.Sub(now) / time.Second)
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, s := range [][]mdns.RR{out.Answer, out.Ns, out.Extra} {
		for _, rr := range s {
			h := rr.Header()
			if h.Rrtype == mdns.TypeOPT {
				continue
			}
			switch {
			case !fresh:
				h.Ttl = ttl
			case h.Ttl > age:
				h.Ttl -= age
				if h.Ttl > ttl {
					h.Ttl = ttl
				}
			default:
				h.Ttl = 0
			}
		}
	}
	return out, fresh, e.negative, true
}

// put stores an upstream answer for as long as its TTLs allow (capped); it
// stores nothing that must not be reused: truncated answers, SERVFAIL, or a
// negative answer without a SOA to say for how long (RFC 2308 §5).
func (c *Cache) put(k cacheKey, m *mdns.Msg, now time.Time, maxTTL, maxNeg time.Duration) {
	if c.size <= 0 || m.Truncated {
		return
	}
	var ttl time.Duration
	negative := false
	switch {
	case m.Rcode == mdns.RcodeSuccess && len(m.Answer) > 0:
		ttl = minTTL(m.Answer, maxTTL)
	case m.Rcode == mdns.RcodeSuccess || m.Rcode == mdns.RcodeNameError:
		negative = true
		ttl = -1
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				t := min(soa.Hdr.Ttl, soa.Minttl)
				ttl = min(time.Duration(t)*time.Second, maxNeg)
			}
		}
	default:
		return
	}
	if ttl <= 0 {
		return
	}
	stored := m.Copy()
	stored.Id = 0
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.size {
		for victim := range c.entries {
			delete(c.entries, victim)
			break
		}
	}
	c.entries[k] = &cacheEntry{msg: stored, stored: now, expires: now.Add(ttl), negative: negative}
}

func minTTL(rrs []mdns.RR, limit time.Duration) time.Duration {
	ttl := limit
	for _, rr := range rrs {
		if t := time.Duration(rr.Header().Ttl) * time.Second; t < ttl {
			ttl = t
		}
	}
	return ttl
}
