// Command fastpathprobe measures nothing itself: it attaches, in one network
// namespace, a tc program to a device's ingress that hands every IPv4 packet
// for one destination straight to the peer of another veth
// (bpf_redirect_peer), skipping that namespace's whole IP stack: no routing,
// no connection tracking, no nftables. bench/fastpath.sh uses it to measure
// what a node's pod-to-pod path would move if it skipped the node's stack —
// the ceiling of the fast path (internal/fastpath, docs/networking.md) — against the
// same path through the stack and a bare veth. It is a measuring device, not
// a dataplane: it knows nothing of policy or NAT.
//
// With -amime it instead runs amime's own fast path (internal/fastpath) in
// that namespace, as the agent would for two pods, until it is signalled:
// what the real program costs against the bare redirect.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/netns"
)

func main() {
	ns := flag.String("netns", "", "network namespace (name under /run/netns) holding both devices")
	dev := flag.String("dev", "", "device whose ingress gets the program")
	dst := flag.String("dst", "", "IPv4 destination to redirect")
	to := flag.String("to", "", "veth whose peer receives the redirected packets")
	amime := flag.String("amime", "", "run amime's fast path instead, for pods given as VETH=POD-NETNS,... (each pod's eth0 the veth's peer)")
	flag.Parse()
	if *ns != "" && *amime != "" {
		if err := runAmime(*ns, *amime); err != nil {
			fmt.Fprintln(os.Stderr, "fastpathprobe:", err)
			os.Exit(1)
		}
		return
	}
	if *ns == "" || *dev == "" || *dst == "" || *to == "" {
		fmt.Fprintln(os.Stderr, "usage: fastpathprobe -netns NS -dev IF -dst IPV4 -to VETH")
		os.Exit(2)
	}
	if err := run(*ns, *dev, *dst, *to); err != nil {
		fmt.Fprintln(os.Stderr, "fastpathprobe:", err)
		os.Exit(1)
	}
}

func run(ns, dev, dst, to string) error {
	addr, err := netip.ParseAddr(dst)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("-dst %q: not an IPv4 address", dst)
	}
	return netns.Do(netns.Path(ns), func() error {
		in, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("-dev %s: %w", dev, err)
		}
		out, err := netlink.LinkByName(to)
		if err != nil {
			return fmt.Errorf("-to %s: %w", to, err)
		}
		prog, err := load(addr, out.Attrs().Index)
		if err != nil {
			return fmt.Errorf("load the program: %w", err)
		}
		defer prog.Close() // the attached filter keeps its own reference
		qdisc := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: in.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
		if err := netlink.QdiscReplace(qdisc); err != nil {
			return fmt.Errorf("clsact on %s: %w", dev, err)
		}
		filter := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: in.Attrs().Index,
			Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1},
			Fd: prog.FD(), Name: "fastpathprobe", DirectAction: true}
		if err := netlink.FilterReplace(filter); err != nil {
			return errors.Join(fmt.Errorf("attach to %s: %w", dev, err), netlink.QdiscDel(qdisc))
		}
		return nil
	})
}

// load hands the program to the kernel.
func load(dst netip.Addr, ifindex int) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{Name: "fastpathprobe", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: program(dst, ifindex)})
}

// program: an IPv4 packet (Ethernet, no VLAN) whose destination is dst goes to
// the peer of ifindex; everything else continues (TC_ACT_OK).
func program(dst netip.Addr, ifindex int) asm.Instructions {
	const (
		skbData    = 76 // offsetof(struct __sk_buff, data)
		skbDataEnd = 80
		tcActOK    = 0
	)
	d := dst.As4()
	// Loaded as a little-endian word, the address's network-order bytes read
	// back to front.
	want := int32(uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24)
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34), // Ethernet 14 + IPv4 20
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, "pass"), // ETH_P_IP in network order
		asm.LoadMem(asm.R5, asm.R2, 30, asm.Word),
		asm.JNE.Imm32(asm.R5, want, "pass"),
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
	}
}
