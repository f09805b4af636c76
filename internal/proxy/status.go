package proxy

import "amime.dev/amime/internal/status"

// Status reports what the proxier has programmed and how its last sync went,
// for the agent's /status.
func (p *Proxier) Status() status.Component {
	p.mu.Lock()
	defer p.mu.Unlock()
	services := map[string]bool{}
	endpoints := 0
	for _, sp := range p.ports {
		services[sp.Namespace+"/"+sp.Name] = true
		endpoints += len(sp.Endpoints)
	}
	s := status.Component{Name: "proxy",
		Programmed: map[string]int{"services": len(services), "servicePorts": len(p.ports), "endpoints": endpoints, "refused": len(p.refused)}}
	s.LastSync = p.lastOK
	if p.lastError != nil {
		s.LastError = p.lastError.Error()
	}
	return s
}
