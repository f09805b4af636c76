package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
)

// dependency is a program the lab needs and the Debian package that provides it.
type dependency struct {
	path, pkg string
}

var dependencies = []dependency{
	{"ip", "iproute2"},
	{"nsenter", "util-linux"},
	{"umount", "mount"},
	{"curl", "curl"},
	{"nft", "nftables"},
	{"ethtool", "ethtool"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
}

// Preflight checks that the lab can run here, and says what to do when it cannot.
func Preflight(bin, controlPlaneBin string) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("the lab needs root (it creates network namespaces and links): run it with sudo"))
	}
	var missing []string
	for _, d := range dependencies {
		if _, err := exec.LookPath(d.path); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", d.path, d.pkg))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing dependencies: %v: run `make deps` (or `apt-get install` them)", missing))
	}
	if _, err := os.Stat(controlPlaneBin); err != nil {
		errs = append(errs, fmt.Errorf("control plane binary %s not found: run `make build`", controlPlaneBin))
	}
	if _, err := os.Stat(bin); err != nil {
		errs = append(errs, fmt.Errorf("amime binary %s not found: run `make build`", bin))
	}
	return errors.Join(errs...)
}

// portsFree checks, before anything is created, that the lab's loopback ports
// are free, so a clash fails at once with nothing to clean up.
func portsFree(host string, ports ...int) error {
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return fmt.Errorf("port %d on %s is in use by another program (the lab's etcd needs it): stop that program, or pick other ports with --etcd-port", p, host)
		}
		ln.Close()
	}
	return nil
}
