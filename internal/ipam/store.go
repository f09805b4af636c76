package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// On-disk layout of a data directory:
//
//	<dataDir>/lock                         flock(2)ed exclusively around every operation; always empty
//	<dataDir>/<range>/                     one directory per pod range, named like 10.244.1.0_24 or fd00:10:244:1::_64
//	<dataDir>/<range>/<ip>                 one file per allocation, named like 10.244.1.7 or fd00:10:244:1::7,
//	                                       holding "<container ID>\n<ifname>\n"
//	<dataDir>/<range>/last_reserved        the address most recently handed out from the range
//	<dataDir>/<range>/last_reserved.tmp    left over only if a crash interrupted replacing last_reserved
//
// Directories are created 0700 and files 0600. Other names are ignored.
const (
	lockName         = "lock"
	lastReservedName = "last_reserved"
)

// errTaken means an allocation file exists already.
var errTaken = errors.New("address already allocated")

// record is one allocation file.
type record struct {
	Addr  netip.Addr
	Range netip.Prefix
	Owner Attachment
	Known bool // whether the file names an owner; false for empty or garbled files
}

func (r record) allocation() Allocation {
	return Allocation{Addr: r.Addr, Range: r.Range, Gateway: GatewayOf(r.Range)}
}

// store is a data directory whose lock is held.
//
// Files created and removed under the lock are made durable after it is
// released (flush): the lock only has to make an address's file visible to the
// other allocators, which the page cache does at once, and holding it through
// each fsync would serialise a node's concurrent ADDs behind the disk. The
// caller answers only after flush succeeds, so an ADD that reported success
// survives a crash exactly as before.
type store struct {
	dir  string
	lock *os.File
	// created files to fsync, and directories whose entries changed.
	created []string
	dirs    map[string]bool
}

// openStore takes the data directory's exclusive lock, creating the directory and
// the lock file if missing.
func openStore(dir string) (*store, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ipam: open lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ipam: lock %s: %w", path, err)
	}
	return &store{dir: dir, lock: f, dirs: map[string]bool{}}, nil
}

// flush fsyncs the files created and the directories changed under the lock;
// it runs after close.
func (s *store) flush() error {
	var errs []error
	for _, path := range s.created {
		if err := syncPath(path); err != nil {
			errs = append(errs, err)
		}
	}
	for dir := range s.dirs {
		if err := syncPath(dir); err != nil {
			errs = append(errs, err)
		}
	}
	s.created, s.dirs = nil, map[string]bool{}
	return errors.Join(errs...)
}

// close releases the lock (closing the file would release it too).
func (s *store) close() error {
	uerr := unix.Flock(int(s.lock.Fd()), unix.LOCK_UN)
	cerr := s.lock.Close()
	if err := errors.Join(uerr, cerr); err != nil {
		return fmt.Errorf("ipam: unlock %s: %w", s.lock.Name(), err)
	}
	return nil
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ipam: create data directory: %w", err)
	}
	return nil
}

// rangeDirName is the directory name of range p: its string form with "/" replaced by "_".
func rangeDirName(p netip.Prefix) string {
	return strings.Replace(p.String(), "/", "_", 1)
}

// parseRangeDir is the inverse of rangeDirName; it accepts only canonical names.
func parseRangeDir(name string) (netip.Prefix, bool) {
	i := strings.LastIndexByte(name, '_')
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(name[:i] + "/" + name[i+1:])
	if err != nil || p != p.Masked() || rangeDirName(p) != name {
		return netip.Prefix{}, false
	}
	return p, true
}

func (s *store) rangeDir(p netip.Prefix) string { return filepath.Join(s.dir, rangeDirName(p)) }

func (s *store) path(r record) string { return filepath.Join(s.rangeDir(r.Range), r.Addr.String()) }

// scanAll reads the allocations of every range directory on disk.
func (s *store) scanAll() (map[netip.Prefix][]record, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: read data directory: %w", err)
	}
	all := map[netip.Prefix][]record{}
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		p, ok := parseRangeDir(de.Name())
		if !ok {
			continue
		}
		recs, err := s.scan(p)
		if err != nil {
			return nil, err
		}
		all[p] = recs
	}
	return all, nil
}

// scan reads the allocations of range p, sorted by address; none if its
// directory does not exist.
func (s *store) scan(p netip.Prefix) ([]record, error) {
	dir := s.rangeDir(p)
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam: read range %s: %w", p, err)
	}
	var recs []record
	for _, de := range des {
		a, err := netip.ParseAddr(de.Name())
		if err != nil || a.String() != de.Name() || !p.Contains(a) || !de.Type().IsRegular() {
			continue // not an allocation file
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ipam: read allocation %s of range %s: %w", a, p, err)
		}
		owner, ok := parseOwner(data)
		recs = append(recs, record{Addr: a, Range: p, Owner: owner, Known: ok})
	}
	slices.SortFunc(recs, func(x, y record) int { return x.Addr.Compare(y.Addr) })
	return recs, nil
}

// formatOwner is the content of an allocation file.
func formatOwner(att Attachment) []byte {
	return []byte(att.ContainerID + "\n" + att.IfName + "\n")
}

// parseOwner parses what formatOwner wrote. The trailing newline is required,
// so a write torn by a crash never passes for a (wrong) owner.
func parseOwner(data []byte) (Attachment, bool) {
	body, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return Attachment{}, false
	}
	id, ifname, ok := strings.Cut(body, "\n")
	if !ok {
		return Attachment{}, false
	}
	att := Attachment{ContainerID: id, IfName: ifname}
	if att.validate() != nil {
		return Attachment{}, false
	}
	return att, true
}

// create writes allocation r: the file is created exclusively (errTaken if it
// exists) and written; flush makes it durable. On failure the file is removed
// again.
func (s *store) create(r record) error {
	dir := s.rangeDir(r.Range)
	switch err := os.Mkdir(dir, 0o700); {
	case err == nil:
		s.dirs[s.dir] = true
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("ipam: create range directory for %s: %w", r.Range, err)
	}
	path := s.path(r)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("ipam: allocate %s: %w", r.Addr, errTaken)
	}
	if err != nil {
		return fmt.Errorf("ipam: allocate %s: %w", r.Addr, err)
	}
	_, werr := f.Write(formatOwner(r.Owner))
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		if rerr := os.Remove(path); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("ipam: allocate %s: %w", r.Addr, err)
	}
	s.created = append(s.created, path)
	s.dirs[dir] = true
	return nil
}

// remove deletes allocation r's file, if it still exists; flush makes the
// removal durable.
func (s *store) remove(r record) error {
	path := s.path(r)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ipam: release %s: %w", r.Addr, err)
	}
	s.created = slices.DeleteFunc(s.created, func(p string) bool { return p == path })
	s.dirs[filepath.Dir(path)] = true
	return nil
}

// removeAll removes every record of recs, also after a failure, and reports
// all failures.
func (s *store) removeAll(recs []record) error {
	var errs []error
	for _, r := range recs {
		errs = append(errs, s.remove(r))
	}
	return errors.Join(errs...)
}

// readLastReserved returns the address most recently handed out from range p, or
// the zero Addr if there is none (or the file is garbled).
func (s *store) readLastReserved(p netip.Prefix) (netip.Addr, error) {
	data, err := os.ReadFile(filepath.Join(s.rangeDir(p), lastReservedName))
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ipam: read last reserved address of %s: %w", p, err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil || !p.Contains(a) {
		return netip.Addr{}, nil
	}
	return a, nil
}

// writeLastReserved atomically replaces range p's last_reserved file. A fixed
// temporary name suffices because the lock is held. It is not fsync'd: the
// cursor only spreads reuse out, and one that a crash took back to an older
// address still skips every address in use.
func (s *store) writeLastReserved(p netip.Prefix, a netip.Addr) error {
	dir := s.rangeDir(p)
	tmp := filepath.Join(dir, lastReservedName+".tmp")
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(a.String() + "\n")
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, lastReservedName))
	}()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ipam: record last reserved address of %s: %w", p, err)
	}
	return nil
}

// syncPath fsyncs a file, or a directory so that entries created, renamed or
// removed in it survive a crash.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
