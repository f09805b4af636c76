package tour

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

func steps() []step {
	return []step{
		{"A Deployment and a Service", deployAndService},
		{"Pod IPs and node IPs", podAndNodeIPs},
		{"Reaching the Service by name from a pod", fromNetshoot},
		{"Names across namespaces", acrossNamespaces},
		{"Scaling out: five endpoints, traffic spread over them", scaleOut},
		{"From outside the cluster: NodePort and LoadBalancer", fromOutside},
		{"What amime programmed", amimeStatus},
		{"Go on from here", goOn},
	}
}

func deployAndService(ctx context.Context, r *Runner, res *Results) error {
	r.say("A Deployment keeps pods running from a template; a Service gives the pods it selects (app=nginx) one stable virtual IP and name.")
	if _, err := r.show(ctx, "kubectl", "apply", "-f", r.manifest("10-nginx-hello.yaml")); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "rollout", "status", "deployment/nginx-hello", "--timeout=120s"); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "get", "deploy,svc", "-o", "wide"); err != nil {
		return err
	}
	if err := r.waitEndpoints(ctx, "default", "nginx-svc", 1); err != nil {
		return err
	}
	r.say("\nThe endpoints controller of Kubernetes lists the ready pods behind the Service; amime's proxy reads the same list (as EndpointSlices) and puts it in its nftables maps.")
	out, err := r.show(ctx, "kubectl", "get", "endpoints", "nginx-svc")
	if err != nil {
		return err
	}
	ip, err := r.quiet(ctx, "kubectl", "get", "svc", "nginx-svc", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return err
	}
	res.ClusterIP = strings.TrimSpace(ip)
	pods, err := r.quiet(ctx, "kubectl", "get", "pods", "-l", "app=nginx", "-o", "jsonpath={.items[*].status.podIP}")
	if err != nil {
		return err
	}
	res.PodIPs = strings.Fields(pods)
	for _, p := range res.PodIPs {
		if !strings.Contains(out, p+":80") {
			return fmt.Errorf("endpoints of nginx-svc do not show pod IP %s:80", p)
		}
	}
	return nil
}

func podAndNodeIPs(ctx context.Context, r *Runner, res *Results) error {
	r.say("Every pod gets its own IP from its node's pod range (amime's CNI plugin and IPAM); nodes have addresses on another network.")
	if _, err := r.show(ctx, "kubectl", "get", "pod", "-o", "wide", "-l", "app=nginx"); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	out, err := r.quiet(ctx, "kubectl", "get", "nodes", "-o", `jsonpath={range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}{" "}{end}`)
	if err != nil {
		return err
	}
	res.NodeIPs = strings.Fields(out)
	for _, p := range res.PodIPs {
		for _, n := range res.NodeIPs {
			if p == n {
				return fmt.Errorf("pod IP %s is a node IP: pods should have addresses of their own", p)
			}
		}
	}
	mode, _ := r.quiet(ctx, "kubectl", "-n", "kube-system", "get", "configmap", "amime-config", "-o", "jsonpath={.data.routing-mode}")
	switch strings.TrimSpace(mode) {
	case "native":
		r.say("\nThis lab routes natively: the amime agent on each node adds a route to every other node's pod range via that node's IP, so packets cross the node network unchanged.")
	default:
		r.say("\nThis lab uses the overlay: the amime agent gives each node a VXLAN device (amime.vxlan), so a packet from a pod to a pod on another node travels wrapped in UDP between the node IPs, and the node network never needs to know the pod ranges.")
	}
	return nil
}

func fromNetshoot(ctx context.Context, r *Runner, res *Results) error {
	r.say("A pod with network tools; its /etc/resolv.conf points at the cluster DNS (the kube-dns Service), with the search list default.svc.cluster.local svc.cluster.local cluster.local.")
	if _, err := r.show(ctx, "kubectl", "apply", "-f", r.manifest("20-netshoot.yaml")); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "wait", "--for=condition=Ready", "pod/netshoot", "--timeout=120s"); err != nil {
		return err
	}
	r.say("\nThe name nginx-svc is completed by the search list and answered by amime dns; the packet to the ClusterIP is rewritten to a pod IP by one lookup in the proxy's nftables map.")
	out, err := r.show(ctx, "kubectl", "exec", "netshoot", "--", "curl", "-sI", "--max-time", "10", "nginx-svc")
	res.HTTPStatus = statusLine(out)
	if err != nil {
		return err
	}
	if !statusOK(res.HTTPStatus) {
		return fmt.Errorf("curl -I nginx-svc: status %q, want 200", res.HTTPStatus)
	}
	out, err = r.show(ctx, "kubectl", "exec", "netshoot", "--", "nslookup", "nginx-svc")
	res.NSLookupName, res.NSLookupAddress = parseNSLookup(out)
	if err != nil {
		return err
	}
	if res.NSLookupName != "nginx-svc.default.svc.cluster.local" || res.NSLookupAddress != res.ClusterIP {
		return fmt.Errorf("nslookup nginx-svc answered %q %q, want nginx-svc.default.svc.cluster.local %s", res.NSLookupName, res.NSLookupAddress, res.ClusterIP)
	}
	return nil
}

func acrossNamespaces(ctx context.Context, r *Runner, res *Results) error {
	r.say("A Service named nginx in namespace nginx, with two ports (the web server on 80, its Prometheus exporter on 9113).")
	if _, err := r.show(ctx, "kubectl", "apply", "-f", r.manifest("30-nginx-namespace.yaml")); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "-n", "nginx", "rollout", "status", "deployment/nginx", "--timeout=120s"); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "-n", "nginx", "get", "svc", "nginx"); err != nil {
		return err
	}
	if err := r.waitEndpoints(ctx, "nginx", "nginx", 1); err != nil {
		return err
	}
	r.say("\nFrom namespace default, nginx.nginx is completed to nginx.nginx.svc.cluster.local by the search list and resolves:")
	out, err := r.show(ctx, "kubectl", "exec", "netshoot", "--", "curl", "-sI", "--max-time", "10", "nginx.nginx")
	res.CrossNamespaceStatus = statusLine(out)
	if err != nil {
		return err
	}
	if !statusOK(res.CrossNamespaceStatus) {
		return fmt.Errorf("curl -I nginx.nginx: status %q, want 200", res.CrossNamespaceStatus)
	}
	if _, err := r.show(ctx, "kubectl", "exec", "netshoot", "--", "curl", "-s", "--max-time", "10", "nginx.nginx:9113/metrics"); err != nil {
		return err
	}
	r.say("\nThe short name nginx is looked up only in the pod's own namespace (nginx.default.svc.cluster.local, …), where no such Service exists, so amime dns answers NXDOMAIN:")
	out, err = r.show(ctx, "kubectl", "exec", "netshoot", "--", "curl", "-sS", "--max-time", "10", "nginx")
	res.ShortNameError = strings.TrimSpace(out)
	if err == nil || !strings.Contains(out, "Could not resolve host") {
		return fmt.Errorf("curl nginx from namespace default: %q, want \"Could not resolve host\"", res.ShortNameError)
	}
	return nil
}

func scaleOut(ctx context.Context, r *Runner, res *Results) error {
	r.say("Scaling the Deployment creates pods on several nodes; the Service's endpoints follow, and amime's proxy spreads new connections over them at random.")
	if _, err := r.show(ctx, "kubectl", "scale", "deployment", "nginx-hello", "--replicas", "5"); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "rollout", "status", "deployment/nginx-hello", "--timeout=120s"); err != nil {
		return err
	}
	if err := r.waitEndpoints(ctx, "default", "nginx-svc", 5); err != nil {
		return err
	}
	out, err := r.show(ctx, "kubectl", "describe", "endpoints", "nginx-svc")
	if err != nil {
		return err
	}
	res.Endpoints = countEndpointAddresses(out)
	r.say("\nThirty requests from the netshoot pod, counted by the pod that answered (the page's \"Server address\" line):")
	out, err = r.show(ctx, "kubectl", "exec", "netshoot", "--", "sh", "-c",
		`for i in $(seq 30); do curl -s --max-time 5 nginx-svc | grep 'Server&nbsp;address'; done | sort | uniq -c`)
	countServerAddresses(out, res.ServerAddresses)
	if err != nil {
		return err
	}
	if res.Endpoints != 5 {
		return fmt.Errorf("nginx-svc has %d endpoint addresses after scaling to 5", res.Endpoints)
	}
	if len(res.ServerAddresses) < 4 {
		return fmt.Errorf("30 requests reached %d distinct pods, want at least 4", len(res.ServerAddresses))
	}
	return nil
}

func fromOutside(ctx context.Context, r *Runner, res *Results) error {
	r.say("A NodePort Service opens the same port on every node; amime's proxy matches it in one nftables map, sends the packet to any endpoint and masquerades it so the reply comes back the same way.")
	if _, err := r.show(ctx, "kubectl", "apply", "-f", r.manifest("40-nodeport.yaml")); err != nil {
		return err
	}
	if _, err := r.show(ctx, "kubectl", "get", "svc", "nginx-nodeport"); err != nil {
		return err
	}
	np, err := r.quiet(ctx, "kubectl", "get", "svc", "nginx-nodeport", "-o", "jsonpath={.spec.ports[0].nodePort}")
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(strings.TrimSpace(np))
	if err != nil {
		return fmt.Errorf("nodePort of nginx-nodeport: %q", np)
	}
	res.NodePort = int32(port)
	r.say("\nFrom a client outside the cluster (the lab's external namespace), on every node's IP:")
	var failed []string
	for _, ip := range res.NodeIPs {
		out, err := r.show(ctx, r.labExec("--external", "--", "curl", "-sI", "--max-time", "5", fmt.Sprintf("http://%s:%d/", ip, port))...)
		res.NodePortStatus[ip] = statusLine(out)
		if err != nil || !statusOK(res.NodePortStatus[ip]) {
			failed = append(failed, ip)
		}
	}
	r.say("\nA LoadBalancer Service would get an external IP here once amime allocates LoadBalancer IPs (not in this version); the proxy already serves any IP written to status.loadBalancer.ingress or spec.externalIPs like the ClusterIP.")
	if len(failed) > 0 {
		return fmt.Errorf("NodePort %d did not answer 200 from outside on %s", port, strings.Join(failed, ", "))
	}
	return nil
}

func amimeStatus(ctx context.Context, r *Runner, _ *Results) error {
	r.say("amime status asks every node's agent what it has programmed (routes, Services, endpoints, policies) and shows the DNS replicas.")
	argv := []string{"amime", "status"}
	if r.LabName != "" && r.LabName != "lab" {
		argv = append(argv, "--lab", r.LabName)
	}
	_, err := r.show(ctx, argv...)
	return err
}

func goOn(_ context.Context, r *Runner, _ *Results) error {
	name := ""
	if r.LabName != "" && r.LabName != "lab" {
		name = " --name " + r.LabName
	}
	fmt.Fprintf(r.Out, `
  export KUBECONFIG=%s
  kubectl get pods -A -o wide
  amime lab exec%s netshoot -- bash            # a shell in the pod's namespaces
  amime lab exec%s --node NODE -- nft list table inet amime-proxy
  amime status%s
  amime lab down%s                             # remove everything the lab made
`, r.Kubeconfig, name, name, strings.ReplaceAll(name, "--name", "--lab"), name)
	return nil
}

// waitEndpoints waits (without showing it) until the Service has n ready
// endpoints in its EndpointSlices, so that the next shown command sees them.
func (r *Runner) waitEndpoints(ctx context.Context, ns, svc string, n int) error {
	return eventually(ctx, 60*time.Second, func() error {
		out, err := r.quiet(ctx, "kubectl", "-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name="+svc,
			"-o", `jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{" "}{end}`)
		if err != nil {
			return err
		}
		if got := len(strings.Fields(out)); got != n {
			return fmt.Errorf("service %s/%s has %d ready endpoints, want %d", ns, svc, got, n)
		}
		return nil
	})
}
