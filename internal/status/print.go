package status

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// columns of the node table: each names a component and the count shown.
var columns = []struct{ head, component, kind string }{
	{"ROUTES", "routing", "routes"},
	{"SERVICES", "proxy", "services"},
	{"ENDPOINTS", "proxy", "endpoints"},
	{"POLICIES", "policy", "policies"},
	{"FAST PATH", "fastpath", "endpoints"},
}

// Print writes the report for people: a table per node, then DNS.
func Print(w io.Writer, r *Report, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"NODE", "READY", "AGENT", "MODE"}
	for _, c := range columns {
		head = append(head, c.head)
	}
	head = append(head, "LAST SYNC", "ERROR")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, n := range r.Nodes {
		row := []string{n.Name, yesNo(n.Ready)}
		a := n.Agent
		if a == nil {
			row = append(row, "-", "-")
			for range columns {
				row = append(row, "-")
			}
			row = append(row, "-", n.AgentError)
			fmt.Fprintln(tw, strings.Join(row, "\t"))
			continue
		}
		agent := "Ready"
		if !a.Ready {
			agent = "NotReady"
		}
		row = append(row, agent, a.RoutingMode)
		for _, c := range columns {
			row = append(row, count(a, c.component, c.kind))
		}
		row = append(row, lastSync(a, now), firstError(a))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	d := r.DNS
	switch {
	case d.Error != "" && d.Replicas == 0:
		fmt.Fprintf(w, "DNS: %s\n", d.Error)
	default:
		fmt.Fprintf(w, "DNS: kube-dns %s (%s): %d of %d replicas ready\n", strings.Join(d.ServiceIPs, ","), strings.Join(d.Ports, ","), d.Ready, d.Replicas)
		for _, p := range d.Pods {
			fmt.Fprintf(w, "  %s on %s (%s): %s\n", p.Name, p.Node, p.IP, map[bool]string{true: "Ready", false: "NotReady"}[p.Ready])
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func count(a *Agent, component, kind string) string {
	c := a.Component(component)
	if c == nil {
		return "-"
	}
	n, ok := c.Programmed[kind]
	if !ok {
		return "-"
	}
	return strconv.Itoa(n)
}

// lastSync shows the stalest component: the one a user should look at.
func lastSync(a *Agent, now time.Time) string {
	var oldest time.Time
	for _, c := range a.Components {
		if c.LastSync.IsZero() {
			return "never (" + c.Name + ")"
		}
		if oldest.IsZero() || c.LastSync.Before(oldest) {
			oldest = c.LastSync
		}
	}
	if oldest.IsZero() {
		return "-"
	}
	return ago(now.Sub(oldest)) + " ago"
}

func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}

func firstError(a *Agent) string {
	var errs []string
	for _, c := range a.Components {
		if c.LastError != "" {
			errs = append(errs, c.Name+": "+c.LastError)
		}
	}
	if !a.Ready && a.NotReady != "" && len(errs) == 0 {
		errs = append(errs, a.NotReady)
	}
	if len(errs) == 0 {
		return "-"
	}
	sort.Strings(errs)
	return strings.Join(errs, "; ")
}
