// Package status is what `amime status` reports: each node agent serves its own
// part as JSON on /status (the Agent type), and the command collects those
// through the apiserver's pod proxy, so it works against the lab and against
// any cluster a kubeconfig reaches, with no port opened to the outside.
package status

import (
	"time"
)

// Component is one controller of the agent: what it has programmed and how its
// last sync went.
type Component struct {
	Name string `json:"name"`
	// Programmed counts what is in the dataplane, by kind ("services",
	// "endpoints", "routes", "policies", "pods", ...).
	Programmed map[string]int `json:"programmed"`
	// LastSync is the time of the last sync attempt that succeeded; zero if none.
	LastSync  time.Time `json:"lastSync,omitzero"`
	LastError string    `json:"lastError,omitempty"`
}

// Agent is one node agent's /status document.
type Agent struct {
	Node        string      `json:"node"`
	Version     string      `json:"version,omitempty"`
	RoutingMode string      `json:"routingMode"`
	Ready       bool        `json:"ready"`
	NotReady    string      `json:"notReady,omitempty"` // why, when not ready
	Components  []Component `json:"components"`
}

// Component returns the named component, or nil.
func (a *Agent) Component(name string) *Component {
	for i := range a.Components {
		if a.Components[i].Name == name {
			return &a.Components[i]
		}
	}
	return nil
}
