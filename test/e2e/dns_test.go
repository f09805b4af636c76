//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dnsClient runs a pod with the DNS tools (dig, nslookup, getent: host
// commands in the pod's namespaces, with the pod's resolv.conf) in ns.
func dnsClient(t *testing.T, ns string) {
	t.Helper()
	apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7, command: [sleep, "3600"]}
`, ns))
	readyPodsByName(t, ns, "client")
}

// inPod runs a command in the client pod of ns.
func inPod(t *testing.T, ns string, cmd ...string) (string, error) {
	t.Helper()
	return amime(t, append([]string{"lab", "exec", "-n", ns, "client", "--"}, cmd...)...)
}

// dig asks the cluster DNS (the pod's resolv.conf) and returns dig's short answer lines.
func dig(t *testing.T, ns string, args ...string) []string {
	t.Helper()
	out, err := inPod(t, ns, append([]string{"dig", "+short", "+time=2", "+tries=2"}, args...)...)
	if err != nil {
		t.Fatalf("dig %v: %v", args, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

func waitDNSReady(t *testing.T) {
	t.Helper()
	readyPods(t, "kube-system", "k8s-app=kube-dns", 2)
}

// TestDNSServiceDiscovery: the seeds' cases (a Service by short name in the
// same namespace, <svc>.<ns> across namespaces, the FQDN, a short name from
// another namespace failing), SRV, PTR, TCP, dns-version, and autopath's CNAME.
func TestDNSServiceDiscovery(t *testing.T) {
	waitDNSReady(t)
	svc, err := cs.CoreV1().Services("kube-system").Get(ctx(t), "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.10" {
		t.Errorf("kube-dns clusterIP %s, want the kubelets' cluster DNS 10.96.0.10", svc.Spec.ClusterIP)
	}
	a, b := namespace(t, "dns-a"), namespace(t, "dns-b")
	apply(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx-svc, namespace: %[1]s}
spec:
  selector: {app: nginx}
  ports: [{name: http, port: 80, targetPort: 80}]
`, a))
	dnsClient(t, a)
	dnsClient(t, b)
	nginx, err := cs.CoreV1().Services(a).Get(ctx(t), "nginx-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := nginx.Spec.ClusterIP
	fqdn := "nginx-svc." + a + ".svc.cluster.local"

	if out, err := inPod(t, a, "nslookup", "nginx-svc"); err != nil || !strings.Contains(out, "Name:\t"+fqdn) || !strings.Contains(out, "Address: "+ip) {
		t.Errorf("nslookup nginx-svc in its namespace: %v\n%s", err, out)
	}
	if out, err := inPod(t, b, "nslookup", "nginx-svc."+a); err != nil || !strings.Contains(out, "Address: "+ip) {
		t.Errorf("nslookup nginx-svc.%s across namespaces: %v\n%s", a, err, out)
	}
	// The search list ends with the bare name, outside the zone: REFUSED here.
	if out, err := inPod(t, b, "nslookup", "nginx-svc"); err == nil || strings.Contains(out, ip) {
		t.Errorf("nslookup nginx-svc from another namespace resolved: %v\n%s", err, out)
	}
	if got := dig(t, b, fqdn+"."); strings.Join(got, ",") != ip {
		t.Errorf("dig %s: %v, want %s", fqdn, got, ip)
	}
	if out, _ := inPod(t, b, "dig", "+time=2", fqdn+"."); !strings.Contains(out, " aa ") && !strings.Contains(out, " aa;") {
		t.Errorf("answer is not authoritative:\n%s", out)
	}
	if got := dig(t, b, "+tcp", fqdn+"."); strings.Join(got, ",") != ip {
		t.Errorf("dig over TCP: %v, want %s", got, ip)
	}
	if got := dig(t, b, "SRV", "_http._tcp."+fqdn+"."); strings.Join(got, ",") != "0 100 80 "+fqdn+"." {
		t.Errorf("SRV: %v", got)
	}
	if got := dig(t, b, "-x", ip); strings.Join(got, ",") != fqdn+"." {
		t.Errorf("PTR of %s: %v", ip, got)
	}
	if got := dig(t, b, "TXT", "dns-version.cluster.local."); strings.Join(got, ",") != `"1.1.0"` {
		t.Errorf("dns-version: %v", got)
	}
	// Autopath: the pod's first search domain is completed on the server.
	if got := dig(t, b, "nginx-svc."+a+"."+b+".svc.cluster.local."); strings.Join(got, ",") != ip+","+fqdn+"." {
		t.Errorf("autopath from %s: %v, want a CNAME to %s and its address", b, got, fqdn)
	}
	// Outside names are refused: the lab has no upstream.
	if out, _ := inPod(t, b, "dig", "+time=2", "+tries=1", "example.com."); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("example.com with no upstream:\n%s", out)
	}
}

// TestDNSHeadlessAndExternalName: headless A per ready endpoint, hostname
// records, SRV per endpoint, PTR of an endpoint with a hostname, ExternalName,
// and an endpoint change visible in DNS within 1 s.
func TestDNSHeadlessAndExternalName(t *testing.T) {
	waitDNSReady(t)
	ns := namespace(t, "dns-headless")
	apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: %[1]s}
spec:
  clusterIP: None
  selector: {app: hl}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: pet, namespace: %[1]s, labels: {app: hl}}
spec:
  hostname: pet-0
  subdomain: hl
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec, --http-port=8080], ports: [{containerPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: more, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: hl}}
  template:
    metadata: {labels: {app: hl}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec, --http-port=8080], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: %[1]s}
spec:
  type: ExternalName
  externalName: www.example.com
`, ns))
	dnsClient(t, ns)
	pet := readyPodsByName(t, ns, "pet")
	pods := readyPods(t, ns, "app=hl", 2)
	var ips []string
	for _, p := range pods {
		ips = append(ips, p.Status.PodIP)
	}
	sort.Strings(ips)
	svc := "hl." + ns + ".svc.cluster.local."
	eventually(t, 10*time.Second, "headless A", func() error {
		if got := dig(t, ns, svc); strings.Join(got, ",") != strings.Join(ips, ",") {
			return fmt.Errorf("%v, want %v", got, ips)
		}
		return nil
	})
	if got := dig(t, ns, "pet-0."+svc); strings.Join(got, ",") != pet.Status.PodIP {
		t.Errorf("hostname record: %v, want %s", got, pet.Status.PodIP)
	}
	srv := dig(t, ns, "SRV", "_http._tcp."+svc)
	if len(srv) != 2 || !strings.Contains(strings.Join(srv, ","), "0 100 8080 pet-0."+svc) {
		t.Errorf("SRV per endpoint: %v", srv)
	}
	if got := dig(t, ns, "-x", pet.Status.PodIP); strings.Join(got, ",") != "pet-0."+svc {
		t.Errorf("PTR of the endpoint with a hostname: %v", got)
	}
	if got := dig(t, ns, "CNAME", "ext."+ns+".svc.cluster.local."); strings.Join(got, ",") != "www.example.com." {
		t.Errorf("ExternalName: %v", got)
	}

	// An endpoint change is visible within 1 s of its EndpointSlice.
	mustKubectl(t, "scale", "-n", ns, "deployment/more", "--replicas=2")
	waitEndpoints(t, ns, "hl", 3)
	seen := time.Now().Add(-300 * time.Millisecond) // waitEndpoints sleeps 300 ms after seeing it
	eventually(t, 5*time.Second, "third endpoint in DNS", func() error {
		if got := dig(t, ns, svc); len(got) != 3 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	// The time includes one dig through `lab exec`; the zone itself syncs within 50 ms.
	if took := time.Since(seen); took > 2*time.Second {
		t.Errorf("endpoint change took %s to show in DNS (with a dig through lab exec)", took)
	}
}

// TestDNSParallelAAndAAAA: glibc's getaddrinfo sends A and AAAA at once from
// one UDP socket, the classic trigger of the conntrack insertion race behind
// 5-second DNS timeouts. 1,000 lookups through the kube-dns ClusterIP (DNAT to
// either replica): none may take a second.
func TestDNSParallelAAndAAAA(t *testing.T) {
	waitDNSReady(t)
	ns := namespace(t, "dns-race")
	dnsClient(t, ns)
	// One getent per lookup: a new socket (a new conntrack entry) each time.
	script := `n=0; slow=0; max=0; end=$(( $(date +%s) + 240 ))
while [ $n -lt 1000 ] && [ $(date +%s) -lt $end ]; do
  s=$(date +%s%N); getent ahosts kube-dns.kube-system.svc.cluster.local. >/dev/null || echo fail; e=$(date +%s%N)
  d=$(( (e - s) / 1000000 )); [ $d -gt $max ] && max=$d; [ $d -ge 1000 ] && slow=$((slow+1)); n=$((n+1))
done; echo "n=$n slow=$slow maxms=$max"`
	out, err := inPod(t, ns, "timeout", "300", "sh", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("parallel A+AAAA: %s", strings.TrimSpace(out))
	var n, slow, maxMS int
	last := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	if _, err := fmt.Sscanf(last, "n=%d slow=%d maxms=%d", &n, &slow, &maxMS); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if strings.Contains(out, "fail") || n != 1000 || slow != 0 {
		t.Errorf("parallel A+AAAA: %d lookups, %d failed or took 1 s or more (max %d ms); want 1000 under 1 s", n, slow, maxMS)
	}
}

// TestDNSReplicaDeleted: a DNS pod deleted under a stream of queries: the other
// replica keeps answering, clients see nothing worse than a retry.
func TestDNSReplicaDeleted(t *testing.T) {
	waitDNSReady(t)
	ns := namespace(t, "dns-kill")
	dnsClient(t, ns)
	dnsPods := readyPods(t, "kube-system", "k8s-app=kube-dns", 2)
	if dnsPods[0].Spec.NodeName == dnsPods[1].Spec.NodeName {
		t.Errorf("both DNS replicas on %s: anti-affinity not applied", dnsPods[0].Spec.NodeName)
	}
	var wg sync.WaitGroup
	var out string
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// 300 queries, about 15 s; each may retry (1 s timeout, 3 tries).
		out, err = inPod(t, ns, "timeout", "120", "sh", "-c",
			`ok=0; bad=0; for i in $(seq 300); do if dig +short +time=1 +tries=3 kube-dns.kube-system.svc.cluster.local. | grep -q 10.96.0.10; then ok=$((ok+1)); else bad=$((bad+1)); fi; sleep 0.05; done; echo "ok=$ok bad=$bad"`)
	}()
	time.Sleep(3 * time.Second)
	mustKubectl(t, "delete", "pod", "-n", "kube-system", dnsPods[0].Name, "--wait=false")
	wg.Wait()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "ok=300 bad=0") {
		t.Errorf("queries while a replica was deleted: %s", strings.TrimSpace(out))
	}
	waitDNSReady(t)
}

// TestDNSConfigMapReload: a changed ConfigMap applies without a restart; an
// invalid one is rejected and the previous configuration stays.
func TestDNSConfigMapReload(t *testing.T) {
	waitDNSReady(t)
	ns := namespace(t, "dns-reload")
	dnsClient(t, ns)
	name := "kube-dns.kube-system.svc.cluster.local."
	ttl := func() int {
		out, err := inPod(t, ns, "dig", "+noall", "+answer", "+time=2", name)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(out)
		if len(f) < 2 {
			return -1
		}
		n, _ := strconv.Atoi(f[1])
		return n
	}
	t.Cleanup(func() {
		_, _ = kubectl(t, "patch", "configmap", "-n", "kube-system", "amime-dns", "--type=merge", "-p", `{"data":{"ttl":"5"}}`)
	})
	mustKubectl(t, "patch", "configmap", "-n", "kube-system", "amime-dns", "--type=merge", "-p", `{"data":{"ttl":"17"}}`)
	eventually(t, 20*time.Second, "TTL 17 after the reload", func() error {
		// Both replicas: ask a few times, the ClusterIP spreads the queries.
		for i := 0; i < 4; i++ {
			if got := ttl(); got != 17 {
				return fmt.Errorf("TTL %d", got)
			}
		}
		return nil
	})
	mustKubectl(t, "patch", "configmap", "-n", "kube-system", "amime-dns", "--type=merge", "-p", `{"data":{"ttl":"soon"}}`)
	time.Sleep(2 * time.Second)
	for i := 0; i < 4; i++ {
		if got := ttl(); got != 17 {
			t.Errorf("after an invalid ttl, TTL %d; want the previous 17", got)
		}
	}
}

// TestDNSApiserverCut: an apiserver that goes away leaves DNS answering from
// its last state (#5). Each DNS pod is cut off from the apiserver by an
// nftables table of the test's own in the pod's network namespace (dropping
// traffic to and from the kubernetes Service and the apiserver's address);
// names that existed keep resolving for the whole cut, a Service created
// meanwhile does not, and once the cut is removed it resolves.
func TestDNSApiserverCut(t *testing.T) {
	waitDNSReady(t)
	ns := namespace(t, "dns-cut")
	dnsClient(t, ns)
	svcYAML := func(name string) string {
		return fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec: {ports: [{name: http, port: 80}]}
`, name, ns)
	}
	apply(t, svcYAML("before"))
	before := "before." + ns + ".svc.cluster.local."
	beforeSvc, err := cs.CoreV1().Services(ns).Get(ctx(t), "before", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the Service before the cut resolves", func() error {
		if got := dig(t, ns, before); strings.Join(got, ",") != beforeSvc.Spec.ClusterIP {
			return fmt.Errorf("dig %s: %v", before, got)
		}
		return nil
	})

	// Where the DNS pods reach the apiserver: the kubernetes Service, and the
	// apiserver's own address behind it.
	k8s, err := cs.CoreV1().Services("default").Get(ctx(t), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addrs, ports := []string{k8s.Spec.ClusterIP}, []string{"443"}
	slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx(t), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
		for _, p := range s.Ports {
			if p.Port != nil {
				ports = append(ports, strconv.Itoa(int(*p.Port)))
			}
		}
	}
	set := func(l []string) string { return "{ " + strings.Join(l, ", ") + " }" }
	const table = "amime-e2e-cut"
	dnsPods := readyPods(t, "kube-system", "k8s-app=kube-dns", 2)
	for _, p := range dnsPods {
		nft := func(args ...string) error {
			_, err := amime(t, append([]string{"lab", "exec", "-n", "kube-system", p.Name, "--", "nft"}, args...)...)
			return err
		}
		t.Cleanup(func() { _ = nft("delete", "table", "inet", table) })
		for _, cmd := range [][]string{
			{"add", "table", "inet", table},
			{"add", "chain", "inet", table, "out", "{ type filter hook output priority -10 ; }"},
			{"add", "chain", "inet", table, "in", "{ type filter hook input priority -10 ; }"},
			{"add", "rule", "inet", table, "out", "ip", "daddr", set(addrs), "tcp", "dport", set(ports), "drop"},
			{"add", "rule", "inet", table, "in", "ip", "saddr", set(addrs), "tcp", "sport", set(ports), "drop"},
		} {
			if err := nft(cmd...); err != nil {
				t.Fatalf("cut %s off: %v", p.Name, err)
			}
		}
		// The cut holds: the apiserver is out of reach from the pod.
		if out, err := amime(t, "lab", "exec", "-n", "kube-system", p.Name, "--", "curl", "-sk", "--max-time", "2", "https://"+k8s.Spec.ClusterIP+"/healthz"); err == nil {
			t.Fatalf("%s still reaches the apiserver: %s", p.Name, out)
		}
	}
	t.Logf("DNS pods cut off from %v ports %v", addrs, ports)
	apply(t, svcYAML("during"))
	during := "during." + ns + ".svc.cluster.local."

	// 50 s: past client-go's HTTP/2 health check (30 s idle, 15 s ping), so
	// the informers see their connections fail, not just go quiet.
	cutUntil := time.Now().Add(50 * time.Second)
	n := 0
	for time.Now().Before(cutUntil) {
		if got := dig(t, ns, before); strings.Join(got, ",") != beforeSvc.Spec.ClusterIP {
			t.Fatalf("during the cut (after %d good answers), dig %s: %v", n, before, got)
		}
		n++
		time.Sleep(time.Second)
	}
	if got := dig(t, ns, during); len(got) != 0 {
		t.Errorf("a Service created during the cut resolved: %v (the cut did not hold)", got)
	}
	t.Logf("%d answers from the last state during the cut", n)

	for _, p := range dnsPods {
		if _, err := amime(t, "lab", "exec", "-n", "kube-system", p.Name, "--", "nft", "delete", "table", "inet", table); err != nil {
			t.Errorf("remove the cut of %s: %v", p.Name, err)
		}
	}
	duringSvc, err := cs.CoreV1().Services(ns).Get(ctx(t), "during", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Both replicas must have caught up: ask several times (the ClusterIP spreads them).
	eventually(t, 2*time.Minute, "the Service created during the cut resolves", func() error {
		for range 6 {
			if got := dig(t, ns, during); strings.Join(got, ",") != duringSvc.Spec.ClusterIP {
				return fmt.Errorf("dig %s: %v", during, got)
			}
		}
		return nil
	})
	t.Logf("new Service resolved %s after the cut was removed", time.Since(start).Round(time.Second))
	if got := dig(t, ns, before); strings.Join(got, ",") != beforeSvc.Spec.ClusterIP {
		t.Errorf("after the cut, dig %s: %v", before, got)
	}
}
