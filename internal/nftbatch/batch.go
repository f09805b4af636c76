// Package nftbatch writes changes to one nftables table as a single netlink
// transaction, without the nft binary.
//
// The nft binary loads its cache of the table (every chain, set and often every
// element) before it applies even a two-element change, and parses its input
// into an AST: at 10,000 Services that costs tens of milliseconds per change
// and more than a second per full load, most of it in user space. Here each
// operation becomes one netlink message, built directly from the rule
// expressions of github.com/google/nftables/expr, and the batch goes to the
// kernel in one sendmsg. Only the last message asks for an acknowledgement (the
// kernel reports every failed message anyway): a batch of 100,000 rules does
// not queue 100,000 acknowledgements, which would overflow the socket. Rules
// are not echoed back either.
//
// Tables, base chains and interval sets are left to the nft binary (they are
// few and rarely change); this package covers what grows with the workload:
// regular chains and their rules, plain and timeout sets, and map elements.
package nftbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Batch collects the operations of one transaction on one table.
type Batch struct {
	family  byte
	table   string
	buf     []byte
	lastMsg int      // offset of the last message in buf
	ops     []string // description of each message, by sequence number - 1
	err     error
}

// New returns an empty batch for the table (family unix.NFPROTO_INET, ...).
func New(family byte, table string) *Batch {
	// The batch begins with its BEGIN message, so that Commit sends the
	// buffer as it is, without copying megabytes.
	buf := appendHeader(nil, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, 0, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	return &Batch{family: family, table: table, buf: buf}
}

// Len is the number of operations collected.
func (b *Batch) Len() int { return len(b.ops) }

// Elem is one set or map element: a key (the concatenation of its fields,
// each padded to four bytes, as the kernel stores it) and, for maps, a value
// or a chain to go to.
type Elem struct {
	Key  []byte
	Data []byte // data maps: the value
	Goto string // verdict maps: goto this chain
}

// SetSpec describes a set created by AddSet.
type SetSpec struct {
	Name    string
	KeyType uint32 // nft datatype: 7 ipv4_addr, 8 ipv6_addr
	KeyLen  uint32
	Dynamic bool // updated from the packet path
	Timeout time.Duration
}

// AddChain adds a regular chain (no error when it exists).
func (b *Batch) AddChain(name string) {
	b.msg(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, "add chain "+name, func(a *attrs) {
		a.str(unix.NFTA_CHAIN_TABLE, b.table)
		a.str(unix.NFTA_CHAIN_NAME, name)
	})
}

// DeleteChain deletes a chain (it must be empty of references).
func (b *Batch) DeleteChain(name string) {
	b.msg(unix.NFT_MSG_DELCHAIN, 0, "delete chain "+name, func(a *attrs) {
		a.str(unix.NFTA_CHAIN_TABLE, b.table)
		a.str(unix.NFTA_CHAIN_NAME, name)
	})
}

// FlushChain deletes every rule of a chain.
func (b *Batch) FlushChain(name string) {
	b.msg(unix.NFT_MSG_DELRULE, 0, "flush chain "+name, func(a *attrs) {
		a.str(unix.NFTA_RULE_TABLE, b.table)
		a.str(unix.NFTA_RULE_CHAIN, name)
	})
}

// AddRule appends a rule made of exprs to a chain.
func (b *Batch) AddRule(chain string, exprs []expr.Any) {
	b.msg(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, "add rule to chain "+chain, func(a *attrs) {
		a.str(unix.NFTA_RULE_TABLE, b.table)
		a.str(unix.NFTA_RULE_CHAIN, chain)
		a.nest(unix.NFTA_RULE_EXPRESSIONS, func(l *attrs) {
			for _, e := range exprs {
				data, err := expr.Marshal(b.family, e)
				if err != nil {
					b.fail(fmt.Errorf("rule in chain %s: %w", chain, err))
					return
				}
				l.raw(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
			}
		})
	})
}

// AddSet adds a set (no error when it exists with the same definition).
func (b *Batch) AddSet(s SetSpec) {
	b.msg(unix.NFT_MSG_NEWSET, unix.NLM_F_CREATE, "add set "+s.Name, func(a *attrs) {
		a.str(unix.NFTA_SET_TABLE, b.table)
		a.str(unix.NFTA_SET_NAME, s.Name)
		var flags uint32
		if s.Dynamic {
			flags |= unix.NFT_SET_EVAL
		}
		if s.Timeout > 0 {
			flags |= unix.NFT_SET_TIMEOUT
		}
		a.be32(unix.NFTA_SET_FLAGS, flags)
		a.be32(unix.NFTA_SET_KEY_TYPE, s.KeyType)
		a.be32(unix.NFTA_SET_KEY_LEN, s.KeyLen)
		a.be32(unix.NFTA_SET_ID, uint32(len(b.ops)+1))
		if s.Timeout > 0 {
			a.be64(unix.NFTA_SET_TIMEOUT, uint64(s.Timeout.Milliseconds()))
		}
	})
}

// DeleteSet deletes a set (it must not be referenced).
func (b *Batch) DeleteSet(name string) {
	b.msg(unix.NFT_MSG_DELSET, 0, "delete set "+name, func(a *attrs) {
		a.str(unix.NFTA_SET_TABLE, b.table)
		a.str(unix.NFTA_SET_NAME, name)
	})
}

// FlushSet deletes every element of a set or map.
func (b *Batch) FlushSet(name string) {
	b.msg(unix.NFT_MSG_DELSETELEM, 0, "flush set "+name, func(a *attrs) {
		a.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
		a.str(unix.NFTA_SET_ELEM_LIST_SET, name)
	})
}

// elemsPerMsg keeps the element list of one message well under the 64 KiB an
// attribute length can describe.
const elemsPerMsg = 256

// AddElements adds elements to a set or map.
func (b *Batch) AddElements(set string, elems []Elem) { b.elements(true, set, elems) }

// DeleteElements deletes elements (by key) from a set or map.
func (b *Batch) DeleteElements(set string, elems []Elem) { b.elements(false, set, elems) }

func (b *Batch) elements(add bool, set string, elems []Elem) {
	typ, flags, verb := uint16(unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_CREATE), "add"
	if !add {
		typ, flags, verb = unix.NFT_MSG_DELSETELEM, 0, "delete"
	}
	for len(elems) > 0 {
		chunk := elems[:min(len(elems), elemsPerMsg)]
		elems = elems[len(chunk):]
		desc := fmt.Sprintf("%s %d elements of %s", verb, len(chunk), set)
		if len(chunk) == 1 {
			desc = fmt.Sprintf("%s element %x of %s", verb, chunk[0].Key, set)
		}
		b.msg(typ, flags, desc, func(a *attrs) {
			a.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
			a.str(unix.NFTA_SET_ELEM_LIST_SET, set)
			a.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(l *attrs) {
				for _, e := range chunk {
					l.nest(unix.NFTA_LIST_ELEM, func(el *attrs) {
						el.nest(unix.NFTA_SET_ELEM_KEY, func(k *attrs) { k.raw(unix.NFTA_DATA_VALUE, e.Key) })
						if add && e.Data != nil {
							el.nest(unix.NFTA_SET_ELEM_DATA, func(d *attrs) { d.raw(unix.NFTA_DATA_VALUE, e.Data) })
						}
						if add && e.Goto != "" {
							el.nest(unix.NFTA_SET_ELEM_DATA, func(d *attrs) {
								d.nest(unix.NFTA_DATA_VERDICT, func(v *attrs) {
									v.be32(unix.NFTA_VERDICT_CODE, verdictGoto)
									v.str(unix.NFTA_VERDICT_CHAIN, e.Goto)
								})
							})
						}
					})
				}
			})
		})
	}
}

func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// msg appends one message: netlink header, nfgenmsg, attributes.
func (b *Batch) msg(typ uint16, flags uint16, desc string, body func(*attrs)) {
	b.ops = append(b.ops, desc)
	seq := uint32(len(b.ops)) // 0 is the batch begin
	start := len(b.buf)
	b.lastMsg = start
	b.buf = appendHeader(b.buf, unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|flags, seq, b.family, 0)
	a := attrs{buf: b.buf}
	body(&a)
	b.buf = a.buf
	binary.NativeEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start))
}

func appendHeader(buf []byte, typ, flags uint16, seq uint32, family byte, resID uint16) []byte {
	var h [unix.SizeofNlMsghdr + 4]byte
	binary.NativeEndian.PutUint32(h[0:], uint32(len(h)))
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	h[16] = family
	h[17] = unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(h[18:], resID)
	return append(buf, h[:]...)
}

// attrs appends netlink attributes to a message.
type attrs struct{ buf []byte }

func (a *attrs) raw(typ uint16, data []byte) {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	a.buf = append(append(a.buf, h[:]...), data...)
	for len(a.buf)%4 != 0 {
		a.buf = append(a.buf, 0)
	}
}

func (a *attrs) str(typ uint16, s string) { a.raw(typ, append([]byte(s), 0)) }

func (a *attrs) be32(typ uint16, v uint32) { a.raw(typ, binary.BigEndian.AppendUint32(nil, v)) }

func (a *attrs) be64(typ uint16, v uint64) { a.raw(typ, binary.BigEndian.AppendUint64(nil, v)) }

func (a *attrs) nest(typ uint16, body func(*attrs)) {
	start := len(a.buf)
	a.buf = append(a.buf, 0, 0, 0, 0)
	body(a)
	binary.NativeEndian.PutUint16(a.buf[start:], uint16(len(a.buf)-start))
	binary.NativeEndian.PutUint16(a.buf[start+2:], unix.NLA_F_NESTED|typ)
}

// Error is a failed operation of a batch.
type Error struct {
	Op    string // "add rule to chain svc-…", "delete element … of …"; "commit" for the transaction
	Errno syscall.Errno
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Errno) }

func (e *Error) Unwrap() error { return e.Errno }

// Commit sends the batch as one transaction in the calling thread's network
// namespace. Nothing is applied unless every operation succeeds. An empty batch
// sends nothing.
func (b *Batch) Commit() error {
	if b.err != nil {
		return b.err
	}
	if len(b.ops) == 0 {
		return nil
	}
	last := uint32(len(b.ops))
	// Ask for an acknowledgement of the last operation only.
	binary.NativeEndian.PutUint16(b.buf[b.lastMsg+6:], binary.NativeEndian.Uint16(b.buf[b.lastMsg+6:])|unix.NLM_F_ACK)
	msg := appendHeader(b.buf, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, last+1, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	b.buf = nil // one commit per batch

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	// The kernel takes a batch as one datagram: the send buffer must hold it.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, len(msg)+4096); err != nil {
		return fmt.Errorf("netlink send buffer of %d bytes: %w", len(msg), err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20)
	// The kernel processes the batch within sendmsg; the answers are queued
	// by the time it returns, so a short timeout only guards against a kernel
	// that never answers.
	tv := unix.Timeval{Sec: 10}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send nftables batch of %d operations (%d bytes): %w", len(b.ops), len(msg), err)
	}
	return b.readAcks(fd, last)
}

// readAcks reads the kernel's answers until the acknowledgement of the last
// operation or the failure of the transaction; the first error wins.
func (b *Batch) readAcks(fd int, last uint32) error {
	var first error
	rb := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				err = os.ErrDeadlineExceeded
			}
			if errors.Is(err, unix.ENOBUFS) && first != nil {
				return first // more errors than the socket holds
			}
			return fmt.Errorf("read nftables acknowledgements: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return fmt.Errorf("parse nftables acknowledgements: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(m.Data))
			seq := m.Header.Seq
			if errno != 0 && first == nil {
				op := "commit"
				if seq >= 1 && int(seq) <= len(b.ops) {
					op = b.ops[seq-1]
				}
				first = &Error{Op: op, Errno: syscall.Errno(errno)}
			}
			// The last operation's answer ends the batch; a failed commit is
			// answered on the batch's first message (sequence 0) instead.
			if seq == last || (seq == 0 && errno != 0) {
				return first
			}
		}
	}
}

// verdictGoto is NFT_GOTO (-4) as the kernel reads it, an unsigned 32-bit code.
const verdictGoto = ^uint32(3)
