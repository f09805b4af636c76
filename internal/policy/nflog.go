package policy

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log (NFLOG) constants, from linux/netfilter/nfnetlink_log.h.
const (
	nfnlSubsysULOG     = 4
	nfulnlMsgPacket    = 0
	nfulnlMsgConfig    = 1
	nfulaCfgCmd        = 1
	nfulaCfgMode       = 2
	nfulaCfgQThresh    = 5
	nfulnlCfgCmdBind   = 1
	nfulnlCopyPacket   = 2
	nfulaPayload       = 9
	nfulaPrefix        = 10
	copyRange          = 128 // IP and transport headers are enough
	nfnetlinkV0        = 0
	nlaTypeMask        = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	receiveBufferBytes = 1 << 20
)

// NFLOG receives the packets the kernel logs to one NFLOG group
// (`log group N` in nftables) in the current network namespace.
type NFLOG struct {
	c     *netlink.Conn
	group uint16
}

// OpenNFLOG binds to an NFLOG group.
func OpenNFLOG(group uint16) (*NFLOG, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: dial netfilter netlink: %w", err)
	}
	_ = c.SetReadBuffer(receiveBufferBytes)
	n := &NFLOG{c: c, group: group}
	// Bind the group, copy the first bytes of each packet, and have the kernel
	// send every packet at once instead of batching up to 100 for a second.
	cmds := [][]byte{
		attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}),
		attr(nfulaCfgMode, append(binary.BigEndian.AppendUint32(nil, copyRange), nfulnlCopyPacket, 0)),
		attr(nfulaCfgQThresh, binary.BigEndian.AppendUint32(nil, 1)),
	}
	for _, a := range cmds {
		if err := n.config(a); err != nil {
			c.Close()
			return nil, fmt.Errorf("nflog: configure group %d: %w", group, err)
		}
	}
	return n, nil
}

func attr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nfgenmsg: family, version, resource id (the group, big endian).
func (n *NFLOG) header() []byte {
	return binary.BigEndian.AppendUint16([]byte{unix.AF_UNSPEC, nfnetlinkV0}, n.group)
}

func (n *NFLOG) config(a []byte) error {
	_, err := n.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(n.header(), a...),
	})
	return err
}

// LoggedPacket is one packet of the log.
type LoggedPacket struct {
	Prefix  string
	Payload []byte
}

// Receive blocks until the kernel sends packets.
func (n *NFLOG) Receive() ([]LoggedPacket, error) {
	msgs, err := n.c.Receive()
	if err != nil {
		return nil, err
	}
	var out []LoggedPacket
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		var p LoggedPacket
		for ad.Next() {
			switch ad.Type() & nlaTypeMask {
			case nfulaPrefix:
				p.Prefix = ad.String()
			case nfulaPayload:
				p.Payload = append([]byte(nil), ad.Bytes()...)
			}
		}
		if ad.Err() == nil && p.Payload != nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Close unbinds.
func (n *NFLOG) Close() error { return n.c.Close() }

// RunLog reads the verdict log until ctx ends, judging each packet with the
// controller's current snapshot, and keeps the records in ring.
func RunLog(ctx context.Context, c *Controller, node string, group uint16, ring *LogRing, log *slog.Logger) error {
	n, err := OpenNFLOG(group)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); n.Close() }()
	for {
		pkts, err := n.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// ENOBUFS: the kernel dropped log messages we were too slow for.
			log.Warn("policy verdict log: receive", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, p := range pkts {
			r, err := Record(c.Snapshot(), node, p.Prefix, p.Payload, time.Now())
			if err != nil {
				continue
			}
			c.metrics.loggedVerdict(r.Verdict)
			ring.Add(r)
			log.Info("policy verdict", "verdict", r.Verdict, "direction", r.Direction, "pod", r.Pod, "src", r.Src, "dst", r.Dst,
				"protocol", r.Protocol, "dport", r.DstPort, "policies", r.Policies)
		}
	}
}
