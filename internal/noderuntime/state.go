package noderuntime

import (
	"time"

	"amime.dev/amime/internal/shim"
)

// The node runtime keeps what it needs to adopt running pods after a restart on
// disk, one directory per pod:
//
//	<state>/pods/<uid>/sandbox.json                 network namespace, CNI result
//	<state>/pods/<uid>/files/                       resolv.conf, hosts, hostname, volumes
//	<state>/pods/<uid>/containers/<name>/spec.json  what the shim runs
//	<state>/pods/<uid>/containers/<name>/shim.pid   the shim (leads the process group)
//	<state>/pods/<uid>/containers/<name>/container.pid
//	<state>/pods/<uid>/containers/<name>/exit.json  written by the shim when the process ends
//	<state>/pods/<uid>/containers/<name>/<restart>.log

// sandboxState is the persisted pod sandbox.
type sandboxState struct {
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	UID         string    `json:"uid"`
	ID          string    `json:"id"`
	Netns       string    `json:"netns,omitempty"` // empty for hostNetwork pods
	HostNetwork bool      `json:"hostNetwork"`
	IPs         []string  `json:"ips,omitempty"`
	CNIDone     bool      `json:"cniDone"`
	Created     time.Time `json:"created"`
}

// The shim's types (internal/shim).
type (
	shimSpec  = shim.Spec
	shimMount = shim.Mount
	exitState = shim.Exit
)

func writeJSON(path string, v any) error { return shim.WriteJSON(path, v) }
func readJSON(path string, v any) error  { return shim.ReadJSON(path, v) }
