package noderuntime

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/shim"
)

// NodePrivatePaths are the paths that belong to one node. All lab nodes share the
// machine's file system, so the node runtime runs in a mount namespace of its own
// in which these paths are bind mounts of the node's state directory. What runs
// on the node (the CNI plugins it calls, hostPath volumes of DaemonSet pods) then
// sees exactly what it would see on a node of its own: the agent writes
// /etc/cni/net.d and the plugin keeps its IPAM state in /var/lib/amime.
var NodePrivatePaths = []string{"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/amime", "/run/amime", "/var/lib/cni", "/var/log/pods"}

// privatizeNodePaths runs at start-up of a node runtime started in a new mount
// namespace: it stops mount propagation back to the machine, then binds the
// node's directories over NodePrivatePaths. Mount points missing on the machine
// are created and recorded for `lab down`.
func privatizeNodePaths(stateDir, createdLog string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the node's mounts private: %w", err)
	}
	for _, p := range NodePrivatePaths {
		src := filepath.Join(stateDir, "fs", p)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		target, err := shim.EnsureTarget(shim.Mount{Source: src, Target: p}, createdLog)
		if err != nil {
			return err
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, p, err)
		}
	}
	return nil
}
