package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// udpServer serves DNS over UDP from several sockets bound to the same
// address with SO_REUSEPORT (the kernel spreads clients over them), each read
// by its own goroutine into buffers it reuses. A query the packed cache can
// answer (packed.go) is answered in that goroutine without allocating; any
// other goes to its own goroutine through the full path, so an upstream that
// is slow never holds up the socket.
type udpServer struct {
	h     *Handler
	conns []*net.UDPConn
	// pktinfo: the sockets are bound to a wildcard address, so each reply is
	// sent from the address its query was sent to (IP_PKTINFO/IPV6_PKTINFO).
	pktinfo bool
	wg      sync.WaitGroup
}

// listenUDP opens n sockets on addr (the first one decides the port when addr
// has port 0).
func listenUDP(addr string, n int, h *Handler) (*udpServer, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	s := &udpServer{h: h}
	for i := 0; i < max(n, 1); i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		s.conns = append(s.conns, c)
		if i == 0 {
			la := c.LocalAddr().(*net.UDPAddr)
			addr = la.String()
			s.pktinfo = la.IP.IsUnspecified()
		}
		if s.pktinfo {
			if err := setPktinfo(c); err != nil {
				s.close()
				return nil, fmt.Errorf("udp %s: packet info: %w", addr, err)
			}
		}
	}
	return s, nil
}

// setPktinfo asks for the destination address of each datagram, for both
// families (a wildcard socket is dual-stack); one of the two may fail.
func setPktinfo(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var e4, e6 error
	if err := rc.Control(func(fd uintptr) {
		e4 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		e6 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	}); err != nil {
		return err
	}
	if e4 != nil && e6 != nil {
		return e4
	}
	return nil
}

// LocalAddr is the address the sockets are bound to.
func (s *udpServer) LocalAddr() net.Addr { return s.conns[0].LocalAddr() }

// Serve reads every socket until Close; it returns when all have stopped.
func (s *udpServer) Serve() error {
	s.wg.Add(len(s.conns))
	for _, c := range s.conns {
		go func() { defer s.wg.Done(); s.loop(c) }()
	}
	s.wg.Wait()
	return nil
}

// Shutdown closes the sockets and waits for their goroutines.
func (s *udpServer) Shutdown() {
	s.close()
	s.wg.Wait()
}

func (s *udpServer) close() {
	for _, c := range s.conns {
		_ = c.Close()
	}
}

func (s *udpServer) loop(c *net.UDPConn) {
	buf := make([]byte, mdns.MaxMsgSize)
	oob := make([]byte, 128)
	out := make([]byte, 0, 2048)
	key := make([]byte, 0, 300)
	woob := make([]byte, 0, 128)
	for {
		n, oobn, _, raddr, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // e.g. ENOBUFS: do not spin
			continue
		}
		pkt := buf[:n]
		client := raddr.Addr().Unmap()
		var reply []byte
		var ok bool
		reply, key, ok = s.h.fastAnswer(pkt, client, key, out)
		if ok {
			out = reply[:0]
			woob = replyOOB(woob[:0], oob[:oobn], s.pktinfo)
			_, _, _ = c.WriteMsgUDPAddrPort(reply, woob, raddr)
			continue
		}
		go s.slow(c, bytes.Clone(pkt), replyOOB(nil, oob[:oobn], s.pktinfo), raddr, client)
	}
}

// slow answers one datagram through the full path, as miekg/dns's server
// would (the same accept function, the same replies to rejected messages,
// silence for a header that does not parse), then offers the answer to the
// packed cache.
func (s *udpServer) slow(c *net.UDPConn, b, woob []byte, raddr netip.AddrPort, client netip.Addr) {
	start := time.Now()
	if len(b) < 12 {
		return // any reply to junk can be used for amplification
	}
	dh := mdns.Header{
		Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	write := func(m *mdns.Msg) {
		if out, err := m.Pack(); err == nil {
			_, _, _ = c.WriteMsgUDPAddrPort(out, woob, raddr)
		}
	}
	action := acceptRequest(dh)
	req := new(mdns.Msg)
	if action == mdns.MsgAccept {
		if err := req.Unpack(b); err != nil {
			action = mdns.MsgReject
		}
	}
	switch action {
	case mdns.MsgIgnore:
		return
	case mdns.MsgReject, mdns.MsgRejectNotImplemented:
		resp := headerMsg(dh)
		opcode := resp.Opcode
		resp.SetRcodeFormatError(resp)
		resp.Zero = false
		if action == mdns.MsgRejectNotImplemented {
			resp.Opcode = opcode
			resp.Rcode = mdns.RcodeNotImplemented
		}
		write(resp)
		return
	}
	h := s.h
	snap, cfg := h.zone.snapshot(), h.cfg.Load()
	resp, source := h.Answer(context.Background(), req, client, false)
	// Stored before the reply goes out, so that the client's next identical
	// question finds it.
	h.storePacked(b, req, resp, source, client, snap, cfg)
	write(resp)
	h.observe(start, client, req, resp, source, false)
}

// headerMsg is a message with only the header of a request (miekg/dns's setHdr).
func headerMsg(dh mdns.Header) *mdns.Msg {
	m := new(mdns.Msg)
	m.Id = dh.Id
	m.Response = dh.Bits&(1<<15) != 0
	m.Opcode = int(dh.Bits>>11) & 0xF
	m.Authoritative = dh.Bits&(1<<10) != 0
	m.Truncated = dh.Bits&(1<<9) != 0
	m.RecursionDesired = dh.Bits&(1<<8) != 0
	m.RecursionAvailable = dh.Bits&(1<<7) != 0
	m.AuthenticatedData = dh.Bits&(1<<5) != 0
	m.CheckingDisabled = dh.Bits&(1<<4) != 0
	m.Rcode = int(dh.Bits & 0xF)
	return m
}

// replyOOB turns the packet info of a query into the control message that
// sends its reply from the address the query went to (as miekg/dns does for
// wildcard sockets): the same header, the interface left to routing.
func replyOOB(dst, oob []byte, pktinfo bool) []byte {
	if !pktinfo {
		return nil
	}
	for len(oob) >= unix.SizeofCmsghdr {
		l := int(binary.NativeEndian.Uint64(oob[0:8]))
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return nil
		}
		data := oob[unix.SizeofCmsghdr:l]
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			dst = append(dst, oob[:l]...)
			d := dst[unix.SizeofCmsghdr:]
			clear(d[0:4])            // ifindex
			copy(d[4:8], data[8:12]) // source = the query's destination
			clear(d[8:12])
			return dst
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			dst = append(dst, oob[:l]...)
			clear(dst[unix.SizeofCmsghdr+16 : unix.SizeofCmsghdr+20]) // ifindex
			return dst
		}
		step := (l + 7) &^ 7
		if step > len(oob) {
			break
		}
		oob = oob[step:]
	}
	return nil
}
