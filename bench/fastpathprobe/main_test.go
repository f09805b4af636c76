package main

import (
	"net/netip"
	"os"
	"testing"
)

// TestProgramLoads: the kernel's verifier accepts the program (root only).
func TestProgramLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading a BPF program needs root")
	}
	prog, err := load(netip.MustParseAddr("10.99.62.2"), 7)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	prog.Close()
}

// TestDestinationBytes: the address compared is the packet's network-order
// destination as a little-endian load reads it.
func TestDestinationBytes(t *testing.T) {
	ins := program(netip.MustParseAddr("10.99.62.2"), 7)
	const want = int64(0x023e630a) // 2.62.99.10 read back to front
	for _, in := range ins {
		if in.OpCode.JumpOp() != 0 && in.Constant == want {
			return
		}
	}
	t.Errorf("no comparison with %#x in\n%v", want, ins)
}
