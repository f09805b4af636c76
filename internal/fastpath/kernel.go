package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// Endpoint is a pod of this node the fast path may deliver to and accept
// packets from: the node-side veth and both ends' MACs.
type Endpoint struct {
	IfIndex int
	PodMAC  MAC // the pod's interface: the destination of delivered frames, and the only source accepted
	HostMAC MAC // the node-side veth: the source of delivered frames
}

func (e Endpoint) marshal() []byte {
	b := make([]byte, valueSize)
	binary.NativeEndian.PutUint32(b, uint32(e.IfIndex))
	copy(b[4:], e.PodMAC[:])
	copy(b[10:], e.HostMAC[:])
	return b
}

func unmarshalEndpoint(b []byte) Endpoint {
	var e Endpoint
	e.IfIndex = int(binary.NativeEndian.Uint32(b))
	copy(e.PodMAC[:], b[4:10])
	copy(e.HostMAC[:], b[10:16])
	return e
}

// Kernel is the fast path in the running kernel: the program, its maps and its
// attachments to the ingress of pod veths (tcx links). Nothing is pinned:
// when the agent exits the kernel detaches the program and every packet takes
// the stack's path again, which still forwards them.
type Kernel struct {
	coll  *ebpf.Collection
	links map[int]attachment
}

type attachment struct {
	role Role
	link link.Link
}

// LoadKernel loads the program and creates its maps in the current network
// namespace's kernel. It fails where the kernel lacks BTF, the conntrack
// kfuncs or tcx.
func LoadKernel() (*Kernel, error) {
	syms, err := lookupKernelSymbols()
	if err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(collectionSpec(syms))
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load the fast path program: %+v", verr)
		}
		return nil, fmt.Errorf("load the fast path program: %w", err)
	}
	return &Kernel{coll: coll, links: map[int]attachment{}}, nil
}

// Close detaches the program everywhere and frees the maps.
func (k *Kernel) Close() error {
	var errs []error
	for idx, a := range k.links {
		errs = append(errs, a.link.Close())
		delete(k.links, idx)
	}
	k.coll.Close()
	return errors.Join(errs...)
}

// byFamily is the map of a's family of a pair (IPv4, IPv6).
func (k *Kernel) byFamily(a netip.Addr, pair [2]string) *ebpf.Map {
	if a.Is4() {
		return k.coll.Maps[pair[0]]
	}
	return k.coll.Maps[pair[1]]
}

var (
	endpointMaps = [2]string{mapEndpoints4, mapEndpoints6}
	rangeMaps    = [2]string{mapRanges4, mapRanges6}
)

// each calls fn with every entry of the named maps.
func (k *Kernel) each(fn func(key, value []byte) error, names ...string) error {
	for _, name := range names {
		var key, value []byte
		it := k.coll.Maps[name].Iterate()
		for it.Next(&key, &value) {
			if err := fn(key, value); err != nil {
				return fmt.Errorf("map %s: %w", name, err)
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
	}
	return nil
}

// deleteKey removes a key; absent is fine.
func deleteKey(m *ebpf.Map, key []byte) error {
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// Endpoints returns the contents of both endpoint maps.
func (k *Kernel) Endpoints() (map[netip.Addr]Endpoint, error) {
	out := map[netip.Addr]Endpoint{}
	err := k.each(func(key, value []byte) error {
		a, ok := netip.AddrFromSlice(key)
		if !ok {
			return fmt.Errorf("key of %d bytes", len(key))
		}
		out[a] = unmarshalEndpoint(value)
		return nil
	}, endpointMaps[:]...)
	return out, err
}

// Put adds or replaces the endpoint of an address.
func (k *Kernel) Put(a netip.Addr, e Endpoint) error {
	if err := k.byFamily(a, endpointMaps).Put(a.AsSlice(), e.marshal()); err != nil {
		return fmt.Errorf("fast path endpoint %s: %w", a, err)
	}
	return nil
}

// Delete removes the endpoint of an address (absent is fine).
func (k *Kernel) Delete(a netip.Addr) error {
	if err := deleteKey(k.byFamily(a, endpointMaps), a.AsSlice()); err != nil {
		return fmt.Errorf("fast path endpoint %s: %w", a, err)
	}
	return nil
}

// Attached returns the interfaces a program is attached to, with its role.
func (k *Kernel) Attached() map[int]Role {
	out := make(map[int]Role, len(k.links))
	for idx, a := range k.links {
		out[idx] = a.role
	}
	return out
}

// Attach puts the program of a role on an interface's ingress (in place of
// one of another role).
func (k *Kernel) Attach(ifindex int, role Role) error {
	if a, ok := k.links[ifindex]; ok {
		if a.role == role {
			return nil
		}
		if err := k.Detach(ifindex); err != nil {
			return err
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: k.coll.Programs[programNames[role]], Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach the fast path (%s) to interface %d: %w", role, ifindex, err)
	}
	k.links[ifindex] = attachment{role: role, link: l}
	return nil
}

// Detach takes the program off an interface (gone already is fine: the
// kernel detached it with the interface).
func (k *Kernel) Detach(ifindex int) error {
	a, ok := k.links[ifindex]
	if !ok {
		return nil
	}
	delete(k.links, ifindex)
	return a.link.Close()
}

// Ranges returns the contents of both range maps: true for other nodes' pod
// ranges, false for this node's.
func (k *Kernel) Ranges() (map[netip.Prefix]bool, error) {
	out := map[netip.Prefix]bool{}
	err := k.each(func(key, value []byte) error {
		a, ok := netip.AddrFromSlice(key[4:])
		if !ok {
			return fmt.Errorf("key of %d bytes", len(key))
		}
		out[netip.PrefixFrom(a, int(binary.NativeEndian.Uint32(key)))] = binary.NativeEndian.Uint32(value) != 0
		return nil
	}, rangeMaps[:]...)
	return out, err
}

// rangeKey is an LPM trie key: the prefix length, then the address.
func rangeKey(p netip.Prefix) []byte {
	return append(binary.NativeEndian.AppendUint32(nil, uint32(p.Bits())), p.Masked().Addr().AsSlice()...)
}

// PutRange adds or replaces a range: remote says whether it is another node's.
func (k *Kernel) PutRange(p netip.Prefix, remote bool) error {
	v := uint32(0)
	if remote {
		v = 1
	}
	if err := k.byFamily(p.Addr(), rangeMaps).Put(rangeKey(p), v); err != nil {
		return fmt.Errorf("fast path range %s: %w", p, err)
	}
	return nil
}

// DeleteRange removes a range (absent is fine).
func (k *Kernel) DeleteRange(p netip.Prefix) error {
	if err := deleteKey(k.byFamily(p.Addr(), rangeMaps), rangeKey(p)); err != nil {
		return fmt.Errorf("fast path range %s: %w", p, err)
	}
	return nil
}

// Counters sums the per-CPU counters.
func (k *Kernel) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(counterNames))
	for i, name := range counterNames {
		var perCPU []uint64
		if err := k.coll.Maps[mapStats].Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Tunnel is the overlay's VXLAN device as the programs take it over: the
// pod programs encapsulate what the FIB would send into it, and the tunnel
// program takes apart what comes for it. The zero Tunnel turns both off.
type Tunnel struct {
	IfIndex int        // the VXLAN device
	Local   netip.Addr // its IPv4 underlay address
	VNI     uint32
	Port    uint16 // its UDP port
	MAC     MAC
}

func (t Tunnel) marshal() []byte {
	b := make([]byte, tunnelSize)
	binary.NativeEndian.PutUint32(b[tunnelIfindex:], uint32(t.IfIndex))
	if t.Local.Is4() {
		copy(b[tunnelLocal:], t.Local.AsSlice())
	}
	binary.BigEndian.PutUint32(b[tunnelVNI:], t.VNI<<8)
	binary.BigEndian.PutUint16(b[tunnelPort:], t.Port)
	copy(b[tunnelMAC:], t.MAC[:])
	return b
}

func unmarshalTunnel(b []byte) Tunnel {
	t := Tunnel{
		IfIndex: int(binary.NativeEndian.Uint32(b[tunnelIfindex:])),
		VNI:     binary.BigEndian.Uint32(b[tunnelVNI:]) >> 8,
		Port:    binary.BigEndian.Uint16(b[tunnelPort:]),
	}
	if t.IfIndex != 0 {
		t.Local = netip.AddrFrom4([4]byte(b[tunnelLocal : tunnelLocal+4]))
	}
	copy(t.MAC[:], b[tunnelMAC:])
	return t
}

// value reads the one value of a single-entry array map (the tunnel, the
// conntrack timeouts); what says what it holds, for the error.
func (k *Kernel) value(name, what string) ([]byte, error) {
	var b []byte
	if err := k.coll.Maps[name].Lookup(uint32(0), &b); err != nil {
		return nil, fmt.Errorf("fast path %s: %w", what, err)
	}
	return b, nil
}

// setValue writes it.
func (k *Kernel) setValue(name, what string, b []byte) error {
	if err := k.coll.Maps[name].Put(uint32(0), b); err != nil {
		return fmt.Errorf("fast path %s: %w", what, err)
	}
	return nil
}

// Tunnel returns the tunnel the programs take over.
func (k *Kernel) Tunnel() (Tunnel, error) {
	b, err := k.value(mapTunnel, "tunnel")
	if err != nil {
		return Tunnel{}, err
	}
	return unmarshalTunnel(b), nil
}

// SetTunnel sets the tunnel the programs take over (the zero Tunnel: none).
func (k *Kernel) SetTunnel(t Tunnel) error {
	if t.IfIndex != 0 && !t.Local.Is4() {
		return fmt.Errorf("fast path tunnel: underlay address %v is not IPv4", t.Local)
	}
	return k.setValue(mapTunnel, "tunnel", t.marshal())
}

// vtepKey is a MAC padded to the vteps map's 8-byte key.
func vtepKey(m MAC) []byte { return append(m[:], 0, 0) }

// VTEPs returns the vteps map: another node's VTEP MAC → its underlay address.
func (k *Kernel) VTEPs() (map[MAC]netip.Addr, error) {
	out := map[MAC]netip.Addr{}
	err := k.each(func(key, value []byte) error {
		var m MAC
		copy(m[:], key)
		out[m] = netip.AddrFrom4([4]byte(value))
		return nil
	}, mapVTEPs)
	return out, err
}

// PutVTEP adds or replaces a VTEP.
func (k *Kernel) PutVTEP(m MAC, underlay netip.Addr) error {
	if !underlay.Is4() {
		return fmt.Errorf("fast path VTEP %s: underlay address %v is not IPv4", m, underlay)
	}
	if err := k.coll.Maps[mapVTEPs].Put(vtepKey(m), underlay.AsSlice()); err != nil {
		return fmt.Errorf("fast path VTEP %s: %w", m, err)
	}
	return nil
}

// DeleteVTEP removes a VTEP (absent is fine).
func (k *Kernel) DeleteVTEP(m MAC) error {
	if err := deleteKey(k.coll.Maps[mapVTEPs], vtepKey(m)); err != nil {
		return fmt.Errorf("fast path VTEP %s: %w", m, err)
	}
	return nil
}
