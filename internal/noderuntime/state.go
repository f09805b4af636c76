package noderuntime

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"amime.dev/amime/internal/atomicfile"
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

// shimSpec is what the shim runs in a container's namespaces.
type shimSpec struct {
	Argv     []string    `json:"argv"`
	Env      []string    `json:"env"`
	Dir      string      `json:"dir,omitempty"`
	Hostname string      `json:"hostname,omitempty"`
	Mounts   []shimMount `json:"mounts,omitempty"`
	LogPath  string      `json:"logPath"`
	// CreatedLog records mount points the shim had to create on the machine.
	CreatedLog string `json:"createdLog,omitempty"`
}

type shimMount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	File     bool   `json:"file,omitempty"`
}

// exitState is written by the shim when the container process ends.
type exitState struct {
	ExitCode   int       `json:"exitCode"`
	Signal     string    `json:"signal,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	Error      string    `json:"error,omitempty"`
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
