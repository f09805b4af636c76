package status

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// Where the agent and DNS live; deploy/ creates them so.
const (
	Namespace        = "kube-system"
	AgentSelector    = "app.kubernetes.io/name=amime-agent"
	AgentStatusPort  = "9962"
	DNSServiceName   = "kube-dns"
	agentStatusPath  = "/status"
	perAgentDeadline = 5 * time.Second
)

// Report is the whole of `amime status`.
type Report struct {
	Server string       `json:"server"`
	Nodes  []NodeReport `json:"nodes"`
	DNS    DNSReport    `json:"dns"`
}

// NodeReport joins a Node with its agent's own report.
type NodeReport struct {
	Name       string   `json:"name"`
	Ready      bool     `json:"ready"` // the Node's Ready condition
	InternalIP []string `json:"internalIPs"`
	PodCIDRs   []string `json:"podCIDRs"`
	AgentPod   string   `json:"agentPod,omitempty"`
	// Agent is nil when no agent runs on the node or it did not answer; AgentError says why.
	Agent      *Agent `json:"agent,omitempty"`
	AgentError string `json:"agentError,omitempty"`
}

// DNSReport describes the cluster DNS behind the kube-dns Service.
type DNSReport struct {
	ServiceIPs []string    `json:"serviceIPs"`
	Replicas   int         `json:"replicas"`
	Ready      int         `json:"ready"`
	Pods       []DNSPod    `json:"pods"`
	Error      string      `json:"error,omitempty"`
	Ports      []string    `json:"ports,omitempty"`
	Deployment *Deployment `json:"deployment,omitempty"`
}

// Deployment is the DNS Deployment's replica counts, when there is one.
type Deployment struct {
	Name      string `json:"name"`
	Desired   int32  `json:"desired"`
	Available int32  `json:"available"`
}

// DNSPod is one DNS replica.
type DNSPod struct {
	Name  string `json:"name"`
	Node  string `json:"node"`
	IP    string `json:"ip"`
	Ready bool   `json:"ready"`
}

// Collect builds the report. Only the apiserver is contacted: agents are asked
// through its pod proxy, concurrently, each with a deadline, so one stuck node
// cannot hang the command.
func Collect(ctx context.Context, cs kubernetes.Interface, server string) (*Report, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	agents, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector})
	if err != nil {
		return nil, fmt.Errorf("list agent pods: %w", err)
	}
	byNode := map[string]*corev1.Pod{}
	for i := range agents.Items {
		p := &agents.Items[i]
		if p.DeletionTimestamp == nil {
			byNode[p.Spec.NodeName] = p
		}
	}
	r := &Report{Server: server, Nodes: make([]NodeReport, len(nodes.Items))}
	var wg sync.WaitGroup
	for i := range nodes.Items {
		n := &nodes.Items[i]
		nr := &r.Nodes[i]
		nr.Name, nr.PodCIDRs = n.Name, n.Spec.PodCIDRs
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				nr.Ready = c.Status == corev1.ConditionTrue
			}
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				nr.InternalIP = append(nr.InternalIP, a.Address)
			}
		}
		pod := byNode[n.Name]
		if pod == nil {
			nr.AgentError = "no amime-agent pod on this node"
			continue
		}
		nr.AgentPod = pod.Name
		wg.Go(func() {
			nr.Agent, err = fetchAgent(ctx, cs, pod.Name)
			if err != nil {
				nr.AgentError = err.Error()
			}
		})
	}
	wg.Wait()
	sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].Name < r.Nodes[j].Name })
	r.DNS = collectDNS(ctx, cs)
	return r, nil
}

func fetchAgent(ctx context.Context, cs kubernetes.Interface, pod string) (*Agent, error) {
	ctx, cancel := context.WithTimeout(ctx, perAgentDeadline)
	defer cancel()
	raw, err := cs.CoreV1().Pods(Namespace).ProxyGet("http", pod, AgentStatusPort, agentStatusPath, nil).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent %s did not answer on :%s%s: %w", pod, AgentStatusPort, agentStatusPath, err)
	}
	var a Agent
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("agent %s: bad status document: %w", pod, err)
	}
	return &a, nil
}

// collectDNS finds the DNS replicas through the kube-dns Service's selector, so
// it reports whatever serves cluster DNS (amime dns, or CoreDNS before it).
func collectDNS(ctx context.Context, cs kubernetes.Interface) DNSReport {
	var d DNSReport
	svc, err := cs.CoreV1().Services(Namespace).Get(ctx, DNSServiceName, metav1.GetOptions{})
	if err != nil {
		d.Error = fmt.Sprintf("service %s/%s: %v", Namespace, DNSServiceName, err)
		return d
	}
	d.ServiceIPs = svc.Spec.ClusterIPs
	for _, p := range svc.Spec.Ports {
		d.Ports = append(d.Ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	if len(svc.Spec.Selector) == 0 {
		d.Error = "the kube-dns Service has no selector"
		return d
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector).String()
	pods, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		d.Error = fmt.Sprintf("list DNS pods: %v", err)
		return d
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		dp := DNSPod{Name: p.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				dp.Ready = c.Status == corev1.ConditionTrue
			}
		}
		d.Pods = append(d.Pods, dp)
		d.Replicas++
		if dp.Ready {
			d.Ready++
		}
	}
	sort.Slice(d.Pods, func(i, j int) bool { return d.Pods[i].Name < d.Pods[j].Name })
	deps, err := cs.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, dep := range deps.Items {
			if dep.Spec.Selector == nil {
				continue
			}
			s, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
			if err != nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || s.Empty() {
				continue
			}
			want := int32(1)
			if dep.Spec.Replicas != nil {
				want = *dep.Spec.Replicas
			}
			d.Deployment = &Deployment{Name: dep.Name, Desired: want, Available: dep.Status.AvailableReplicas}
			break
		}
	}
	if d.Replicas == 0 {
		d.Error = "no pod matches the kube-dns Service: nothing answers cluster DNS"
	}
	return d
}
