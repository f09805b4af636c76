//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The upstream netpol e2e model: namespaces x, y, z (here pol-x, pol-y, pol-z,
// labelled ns=x…), pods a, b, c in each (labelled pod=a…; a on node 1, b on
// node 2, c on node 3), each serving TCP and UDP on ports 80 and 81 (agnhost
// serve-hostname, one container per port and protocol, container ports named
// serve-<port>-<proto>), and the lab's external namespace as a tenth source
// ("ext", reaching the pods through node 1).

var (
	polNamespaces = []string{"x", "y", "z"}
	polPods       = []string{"a", "b", "c"}
)

type polModel struct {
	ip     map[string]string // "x/a" → pod IP
	extNet string            // the external namespace
	extIP  string
}

var (
	polOnce  sync.Once
	polShape *polModel
)

func polNS(n string) string { return "pol-" + n }

// policyModel creates the 9 pods once for all policy tests.
func policyModel(t *testing.T) *polModel {
	t.Helper()
	polOnce.Do(func() {
		for _, n := range polNamespaces {
			apply(t, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {ns: \"%s\"}}\n", polNS(n), n))
			for i, p := range polPods {
				var ctrs strings.Builder
				for _, port := range []int{80, 81} {
					for _, proto := range []string{"tcp", "udp"} {
						fmt.Fprintf(&ctrs, `
  - name: c%d-%s
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [serve-hostname, --%s, --http=false, --port=%d]
    ports: [{name: serve-%d-%s, containerPort: %d, protocol: %s}]`, port, proto, proto, port, port, proto, port, strings.ToUpper(proto))
					}
				}
				apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {pod: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:%s
`, p, polNS(n), p, nodeName(i+1), ctrs.String()))
			}
		}
		m := &polModel{ip: map[string]string{}, extNet: "amime-" + labName + "-external", extIP: suiteLabs[labName].underlayBase + ".200"}
		for _, n := range polNamespaces {
			readyPods(t, polNS(n), "pod", 3)
			list, err := cs.CoreV1().Pods(polNS(n)).List(ctx(t), metav1.ListOptions{LabelSelector: "pod"})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range list.Items {
				m.ip[n+"/"+p.Name] = p.Status.PodIP
			}
		}
		// The external namespace reaches the pod range through node 1.
		if _, err := run(ctx(t), "ip", "-n", m.extNet, "route", "replace", suiteLabs[labName].podCIDR, "via", nodeIP(1)); err != nil {
			t.Fatal(err)
		}
		polShape = m
	})
	if polShape == nil {
		t.Fatal("the policy model did not come up")
	}
	return polShape
}

func polTargets() []string {
	var out []string
	for _, n := range polNamespaces {
		for _, p := range polPods {
			out = append(out, n+"/"+p)
		}
	}
	return out
}

// probeMatrix connects from every pod (and ext) to every pod on proto/port,
// each source running its 9 probes in parallel with a 1 s timeout, and returns
// the pairs that connected. A pod's traffic to itself is not probed.
func (m *polModel) probeMatrix(t *testing.T, proto string, port int) map[string]bool {
	t.Helper()
	podBin := filepath.Join(filepath.Dir(*amimeBin), "amime-pod")
	sources := append(polTargets(), "ext")
	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for _, src := range sources {
		var script strings.Builder
		for _, dst := range polTargets() {
			if dst == src {
				continue
			}
			fmt.Fprintf(&script, "(if %s workload agnhost connect --timeout=1s --protocol=%s %s:%d >/dev/null 2>&1; then echo %s ok; else echo %s no; fi) & ",
				podBin, proto, m.ip[dst], port, dst, dst)
		}
		script.WriteString("wait")
		args := []string{"lab", "exec"}
		if src == "ext" {
			args = append(args, "--external")
		} else {
			n, p, _ := strings.Cut(src, "/")
			args = append(args, "-n", polNS(n), p)
		}
		args = append(args, "--", "sh", "-c", script.String())
		wg.Add(1)
		go func(src string, args []string) {
			defer wg.Done()
			out, err := amime(t, args...)
			if err != nil {
				t.Errorf("probes from %s: %v", src, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[1] == "ok" {
					got[src+">"+f[0]] = true
				}
			}
		}(src, args)
	}
	wg.Wait()
	return got
}

// polWant says whether from may connect to to.
type polWant func(from, to string) bool

func polNSOf(p string) string { n, _, _ := strings.Cut(p, "/"); return n }

func anyOf(list ...string) func(string) bool {
	return func(p string) bool {
		for _, x := range list {
			if p == x || x == polNSOf(p)+"/*" {
				return true
			}
		}
		return false
	}
}

func nobody(string) bool { return false }

func isIn(p string, list []string) bool { return anyOf(list...)(p) }

// ingressOnly: traffic into to... only from sources allowed by from.
func ingressOnly(to []string, from func(string) bool) polWant {
	return func(f, t string) bool { return !isIn(t, to) || from(f) }
}

// egressOnly: traffic out of from... only to destinations allowed by to.
func egressOnly(from []string, to func(string) bool) polWant {
	return func(f, t string) bool { return !isIn(f, from) || to(t) }
}

func both(a, b polWant) polWant { return func(f, t string) bool { return a(f, t) && b(f, t) } }

func everything(string, string) bool { return true }

// expectMatrix probes until the observed matrix equals the expected one (the
// agents program within about a second) and fails with the difference.
func (m *polModel) expectMatrix(t *testing.T, proto string, port int, want polWant) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := m.probeMatrix(t, proto, port)
		var wrong []string
		for _, src := range append(polTargets(), "ext") {
			for _, dst := range polTargets() {
				if src == dst {
					continue
				}
				if w := want(src, dst); got[src+">"+dst] != w {
					wrong = append(wrong, fmt.Sprintf("%s -> %s: connected %t, want %t", src, dst, got[src+">"+dst], w))
				}
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(wrong)
			t.Fatalf("%s/%d reachability differs:\n%s", proto, port, strings.Join(wrong, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// policies applies the manifests (X, Y, Z stand for the namespaces) and
// removes every policy of the model's namespaces when the test ends.
func (m *polModel) policies(t *testing.T, manifest string) {
	t.Helper()
	r := strings.NewReplacer("{X}", polNS("x"), "{Y}", polNS("y"), "{Z}", polNS("z"), "{EXT}", m.extIP, "{UNDERLAY}", suiteLabs[labName].underlay)
	apply(t, r.Replace(manifest))
	t.Cleanup(func() { clearPolicies(t) })
}

func clearPolicies(t *testing.T) {
	for _, n := range polNamespaces {
		_, _ = kubectl(t, "delete", "networkpolicy", "--all", "-n", polNS(n), "--wait=true")
	}
	time.Sleep(time.Second)
}

const denyIngressX = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: "{X}"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`

type polProbe struct {
	proto string
	port  int
	want  polWant
}

// TestPolicyTruthTables: the upstream-style cases, each a full 10×9
// reachability matrix per probe.
func TestPolicyTruthTables(t *testing.T) {
	m := policyModel(t)
	xa := []string{"x/a"}
	xall := []string{"x/*"}
	pods := func(p string) bool { return p != "ext" }
	type polStep struct {
		apply  string // manifest applied (a changed policy keeps its name)
		delete string // a policy of X deleted
		probes []polProbe
	}
	cases := []struct {
		name, manifest string
		probes         []polProbe
	}{
		{"no policy", "", []polProbe{{"tcp", 80, everything}, {"udp", 81, everything}}},
		{"default deny ingress", denyIngressX, []polProbe{{"tcp", 80, ingressOnly(xall, nobody)}, {"udp", 80, ingressOnly(xall, nobody)}}},
		{"default deny ingress with defaulted policyTypes", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: "{X}"}
spec: {podSelector: {}}
`, []polProbe{{"tcp", 81, ingressOnly(xall, nobody)}}},
		{"allow all ingress", denyIngressX + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: "{X}"}
spec: {podSelector: {}, ingress: [{}]}
`, []polProbe{{"tcp", 80, everything}}},
		{"default deny egress", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: "{X}"}
spec: {podSelector: {}, policyTypes: [Egress]}
`, []polProbe{{"tcp", 80, egressOnly(xall, nobody)}, {"udp", 81, egressOnly(xall, nobody)}}},
		{"egress rules without policyTypes isolate egress", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-y, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xa, nobody), egressOnly(xa, anyOf("y/*")))}}},
		{"allow from pod selector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("x/b"))}}},
		{"allow from namespace selector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("y/*"))}}},
		{"namespace AND pod selector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-b, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("y/b"))}}},
		{"namespace OR pod selector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-or-b, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}, {podSelector: {matchLabels: {pod: b}}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("y/*", "x/b"))}}},
		{"empty namespace selector: all pods", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-pods, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, pods)}}},
		{"matchExpressions NotIn", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-y, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: ["y"]}]}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("x/*", "z/*"))}}},
		{"matchExpressions In, Exists, DoesNotExist", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bc-anywhere, namespace: "{X}"}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a]}]}
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nobody-missing, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: DoesNotExist}]}}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xa, anyOf("x/b", "x/c", "y/b", "y/c", "z/b", "z/c")), ingressOnly([]string{"x/b"}, nobody))}}},
		{"numeric port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: port-81, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 81, protocol: TCP}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, nobody)}, {"tcp", 81, everything}, {"udp", 81, ingressOnly(xa, nobody)}}},
		{"named port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}], ports: [{port: serve-81-udp, protocol: UDP}]}]
`, []polProbe{{"udp", 81, ingressOnly(xa, anyOf("y/*"))}, {"udp", 80, ingressOnly(xa, nobody)}, {"tcp", 81, ingressOnly(xa, nobody)}}},
		{"named port no pod has", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-missing, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: no-such-port}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, nobody)}}},
		{"endPort", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 81, endPort: 90, protocol: TCP}]}]
`, []polProbe{{"tcp", 81, everything}, {"tcp", 80, ingressOnly(xa, nobody)}}},
		{"UDP only", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp, namespace: "{X}"}
spec:
  podSelector: {}
  ingress: [{ports: [{protocol: UDP}]}]
`, []polProbe{{"udp", 80, everything}, {"tcp", 80, ingressOnly(xall, nobody)}}},
		{"union of policies", denyIngressX + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-80, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-81, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}], ports: [{port: 81}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xa, anyOf("y/*")), ingressOnly([]string{"x/b", "x/c"}, nobody))}, {"tcp", 81, both(ingressOnly(xa, anyOf("z/*")), ingressOnly([]string{"x/b", "x/c"}, nobody))}}},
		{"ipBlock with except (from outside)", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{ipBlock: {cidr: "{UNDERLAY}", except: ["{EXT}/32"]}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, nobody)}}},
		{"ipBlock admits the external address", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ext, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{ipBlock: {cidr: "{EXT}/32"}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("ext"))}}},
		{"egress to a namespace and DNS", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
  - ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
`, []polProbe{{"tcp", 80, egressOnly(xa, anyOf("y/*"))}}},
		{"egress named port resolved on the destination", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-named, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: serve-81-tcp}]}]
`, []polProbe{{"tcp", 81, everything}, {"tcp", 80, egressOnly(xa, nobody)}}},
		{"ingress and egress across namespaces", denyIngressX + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: "{X}"}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-x, namespace: "{Y}"}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: "x"}}}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xall, anyOf("y/*")), egressOnly([]string{"y/*"}, anyOf("x/*")))}}},
		{"update: a changed podSelector moves the isolation", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-c, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]
`, []polProbe{{"tcp", 80, ingressOnly(xa, anyOf("x/c"))}}},
		{"deletion restores reachability", denyIngressX + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-a, namespace: "{X}"}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}
`, []polProbe{{"tcp", 80, both(ingressOnly(xall, nobody), egressOnly(xa, nobody))}}},
		{"egress to a namespace by label on one port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-y-81, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}}], ports: [{port: 81, protocol: TCP}]}]
`, []polProbe{{"tcp", 81, egressOnly(xa, anyOf("y/*"))}, {"tcp", 80, egressOnly(xa, nobody)}, {"udp", 81, egressOnly(xa, nobody)}}},
		{"ingress on 81 UDP only, from a namespace", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-udp-81, namespace: "{X}"}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}], ports: [{port: 81, protocol: UDP}]}]
`, []polProbe{{"udp", 81, ingressOnly(xall, anyOf("z/*"))}, {"udp", 80, ingressOnly(xall, nobody)}, {"tcp", 81, ingressOnly(xall, nobody)}}},
		{"NotIn podSelector on ingress and egress denied in the same policy", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-b-no-egress, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [b]}]}}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xa, anyOf("x/c")), egressOnly(xa, nobody))}}},
		{"default deny egress plus one allowed backend", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: "{X}"}
spec: {podSelector: {}, policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-y-b-80, namespace: "{X}"}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80, protocol: TCP}]}]
`, []polProbe{{"tcp", 80, egressOnly(xall, anyOf("y/b"))}, {"tcp", 81, egressOnly(xall, nobody)}}},
		{"policies in several namespaces on the same pods", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-b, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-z-c, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}, podSelector: {matchLabels: {pod: c}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-a-from-x, namespace: "{Y}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "x"}}}]}]
`, []polProbe{{"tcp", 80, both(ingressOnly(xa, anyOf("y/b", "z/c")), ingressOnly([]string{"y/a"}, anyOf("x/*")))}}},
	}
	// Cases that go on after their first matrix: a policy changed or
	// deleted, then the matrix again.
	then := map[string][]polStep{
		"update: a changed podSelector moves the isolation": {{apply: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-c, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]
`, probes: []polProbe{{"tcp", 80, ingressOnly([]string{"x/b"}, anyOf("x/c"))}}}},
		"deletion restores reachability": {{delete: "deny-ingress", probes: []polProbe{{"tcp", 80, egressOnly(xa, nobody)}}},
			{delete: "deny-egress-a", probes: []polProbe{{"tcp", 80, everything}, {"udp", 81, everything}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.manifest != "" {
				m.policies(t, c.manifest)
			}
			for _, p := range c.probes {
				m.expectMatrix(t, p.proto, p.port, p.want)
			}
			for _, st := range then[c.name] {
				if st.apply != "" {
					m.policies(t, st.apply)
				}
				if st.delete != "" {
					if out, err := kubectl(t, "delete", "networkpolicy", "-n", polNS("x"), st.delete, "--wait=true"); err != nil {
						t.Fatalf("delete policy %s: %v: %s", st.delete, err, out)
					}
				}
				for _, p := range st.probes {
					m.expectMatrix(t, p.proto, p.port, p.want)
				}
			}
		})
	}
}

// TestPolicyServiceAfterDNAT: traffic to a ClusterIP is judged against the
// backend pod's policies (the proxy's DNAT happens first).
func TestPolicyServiceAfterDNAT(t *testing.T) {
	m := policyModel(t)
	svc := service(t, polNS("x"), "a", "  selector: {pod: a}\n  ports: [{port: 8080, targetPort: 80}]\n")
	waitEndpoints(t, polNS("x"), "a", 1)
	m.policies(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
`)
	podBin := filepath.Join(filepath.Dir(*amimeBin), "amime-pod")
	for _, c := range []struct {
		ns, pod string
		want    bool
	}{{"x", "b", true}, {"y", "b", false}, {"x", "c", false}} {
		eventually(t, 5*time.Second, fmt.Sprintf("%s/%s to the ClusterIP", c.ns, c.pod), func() error {
			_, err := amime(t, "lab", "exec", "-n", polNS(c.ns), c.pod, "--", podBin, "workload", "agnhost", "connect", "--timeout=1s", svc.Spec.ClusterIP+":8080")
			if (err == nil) != c.want {
				return fmt.Errorf("connected: %t, want %t", err == nil, c.want)
			}
			return nil
		})
	}
}

// TestPolicyEstablishedConnections: a connection kept open survives the
// deletion of the policies it was allowed under, and is cut (new packets
// dropped) when a policy that denies it is added.
func TestPolicyEstablishedConnections(t *testing.T) {
	m := policyModel(t)
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: pol-x, labels: {app: echo}}
spec:
  nodeName: `+nodeName(1)+`
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [perl, -MIO::Socket::INET, -e, 'my $s = IO::Socket::INET->new(LocalPort => 9000, Listen => 5, ReuseAddr => 1) or die; while (my $c = $s->accept) { if (!fork) { $c->autoflush(1); print $c $_ while <$c>; exit } }']
`)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "pod", "-n", polNS("x"), "echo", "--wait=false") })
	echo := readyPodsByName(t, polNS("x"), "echo")
	m.policies(t, denyIngressX+`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: "{X}"}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
`)
	time.Sleep(time.Second)
	// A client in y/b on node 2 keeps one TCP connection open (an echo server
	// in perl and nc as client: both on the lab host).
	cmd := exec.Command(*amimeBin, "lab", "exec", "--name", labName, "-n", polNS("y"), "b", "--", "nc", echo.Status.PodIP, "9000")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	roundTrip := func(msg string) bool {
		if _, err := io.WriteString(stdin, msg+"\n"); err != nil {
			return false
		}
		select {
		case l := <-lines:
			return l == msg
		case <-time.After(2 * time.Second):
			return false
		}
	}
	if !roundTrip("allowed") {
		t.Fatal("no echo on the allowed connection")
	}
	clearPolicies(t)
	if !roundTrip("after-delete") {
		t.Fatal("the connection stopped working when its policies were deleted")
	}
	m.policies(t, denyIngressX)
	time.Sleep(1500 * time.Millisecond)
	if roundTrip("after-deny") {
		t.Fatal("the connection still works after a denying policy was added")
	}
}

// TestPolicyNodeProbesStillPass: under default deny, the node's readiness
// probes reach the pod (traffic from the node is never filtered).
func TestPolicyNodeProbesStillPass(t *testing.T) {
	m := policyModel(t)
	m.policies(t, denyIngressX)
	time.Sleep(time.Second)
	apply(t, `
apiVersion: v1
kind: Pod
metadata: {name: probed, namespace: pol-x}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
`)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "pod", "-n", polNS("x"), "probed", "--wait=false") })
	readyPodsByName(t, polNS("x"), "probed")
}

// TestPolicyChangeWithinOneSecond: a new policy is in every node's table
// within a second of the API accepting it (the pods of x live on all nodes).
func TestPolicyChangeWithinOneSecond(t *testing.T) {
	m := policyModel(t)
	start := time.Now()
	m.policies(t, denyIngressX)
	var wg sync.WaitGroup
	for i := 1; i <= 3; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ip := m.ip["x/"+polPods[i-1]]
			for time.Since(start) < 5*time.Second {
				out, _ := amime(t, "lab", "exec", "--node", nodeName(i), "--", "nft", "list", "map", "inet", "amime-policy", "ingress-v4")
				if strings.Contains(out, ip+" : jump") {
					if d := time.Since(start); d > 1500*time.Millisecond {
						t.Errorf("%s: programmed after %s", nodeName(i), d)
					} else {
						t.Logf("%s: programmed within %s (apply and polling included)", nodeName(i), d.Round(time.Millisecond))
					}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Errorf("%s: not programmed after 5 s", nodeName(i))
		}(i)
	}
	wg.Wait()
}

// TestPolicyNewPodFromItsFirstPacket: a pod's policies hold from the first
// packet its container sends. A pod isolated for egress by a default deny
// never connects, not even before the agent has seen its status; a pod no
// policy isolates connects at its first attempt (the CNI plugin's ADD waited
// until the agent had programmed its address, so the fail-closed rule for
// unknown addresses does not hold it back).
func TestPolicyNewPodFromItsFirstPacket(t *testing.T) {
	m := policyModel(t)
	podBin := filepath.Join(filepath.Dir(*amimeBin), "amime-pod")
	attempts := func(name, ns string) []string {
		t.Helper()
		apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: newcomer}}
spec:
  nodeName: %s
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'for i in $(seq 15); do if %s workload agnhost connect --timeout=300ms %s:80 >/dev/null 2>&1; then echo OK; else echo FAIL; fi; sleep 0.1; done']
`, name, ns, nodeName(2), podBin, m.ip["y/a"]))
		t.Cleanup(func() { _, _ = kubectl(t, "delete", "pod", "-n", ns, name, "--wait=false") })
		var lines []string
		eventually(t, 30*time.Second, "pod "+name+" finished", func() error {
			p, err := cs.CoreV1().Pods(ns).Get(ctx(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodSucceeded {
				return fmt.Errorf("phase %s", p.Status.Phase)
			}
			out, err := kubectl(t, "logs", "-n", ns, name)
			if err != nil {
				return err
			}
			lines = strings.Fields(out)
			return nil
		})
		if len(lines) != 15 {
			t.Fatalf("pod %s printed %q, want 15 attempts", name, lines)
		}
		return lines
	}
	if got := attempts("first-allowed", polNS("x")); got[0] != "OK" || slices.Contains(got, "FAIL") {
		t.Errorf("a new pod no policy isolates: attempts %v, want every one (the first included) to connect", got)
	}
	m.policies(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: newcomers-deny-egress, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {app: newcomer}}
  policyTypes: [Egress]
`)
	time.Sleep(time.Second)
	if got := attempts("first-denied", polNS("x")); slices.Contains(got, "OK") {
		t.Errorf("a new pod isolated for egress by a default deny: attempts %v, want none to connect", got)
	}
}

// TestPolicyAgentRestartStaysIsolated: while every agent is killed and
// restarted, probes into isolated pods keep failing and allowed ones keep
// passing.
func TestPolicyAgentRestartStaysIsolated(t *testing.T) {
	m := policyModel(t)
	m.policies(t, denyIngressX+`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-z, namespace: "{X}"}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]}]
`)
	m.expectMatrix(t, "tcp", 80, ingressOnly([]string{"x/*"}, anyOf("z/*")))
	podBin := filepath.Join(filepath.Dir(*amimeBin), "amime-pod")
	load := func(ns, pod, target string) chan string {
		done := make(chan string, 1)
		go func() {
			out, _ := amime(t, "lab", "exec", "-n", polNS(ns), pod, "--", "sh", "-c",
				fmt.Sprintf("ok=0; no=0; for i in $(seq 40); do if %s workload agnhost connect --timeout=1s %s:80 >/dev/null 2>&1; then ok=$((ok+1)); else no=$((no+1)); fi; sleep 0.1; done; echo $ok $no", podBin, target))
			done <- strings.TrimSpace(out)
		}()
		return done
	}
	denied := load("y", "b", m.ip["x/a"])
	allowed := load("z", "b", m.ip["x/c"])
	time.Sleep(time.Second)
	for n := 1; n <= 3; n++ {
		if err := syscall.Kill(agentPid(t, nodeName(n)), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-denied; !strings.HasPrefix(got, "0 ") {
		t.Errorf("probes into an isolated pod during the agent restart: %q (ok no); want none to connect", got)
	}
	if got := <-allowed; !strings.HasSuffix(got, " 0") {
		t.Errorf("allowed probes during the agent restart: %q (ok no); want all to connect", got)
	}
	waitAgentsReady(t)
	m.expectMatrix(t, "tcp", 80, ingressOnly([]string{"x/*"}, anyOf("z/*")))
}

// TestPolicyExplainAndLog: amime policy explain names the deciding policies;
// with the log annotation on the namespace, denied and allowed connections
// appear in amime policy log with their policies.
func TestPolicyExplainAndLog(t *testing.T) {
	m := policyModel(t)
	m.policies(t, denyIngressX+`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-80, namespace: "{X}"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}], ports: [{port: 80}]}]
`)
	out, err := amime(t, "policy", "explain", "--kubeconfig", kubeconfig, "--from", polNS("y")+"/b", "--to", polNS("x")+"/a", "--port", "80/tcp")
	if err != nil || !strings.Contains(out, "ALLOWED") || !strings.Contains(out, "pol-x/from-y-80 rule 0") {
		t.Errorf("explain allowed: %v\n%s", err, out)
	}
	out, err = amime(t, "policy", "explain", "--kubeconfig", kubeconfig, "--from", polNS("z")+"/b", "--to", polNS("x")+"/a", "--port", "80/tcp")
	if err != nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "pol-x/deny-ingress") {
		t.Errorf("explain denied: %v\n%s", err, out)
	}
	mustKubectl(t, "annotate", "namespace", polNS("x"), "policy.amime.dev/log=all", "--overwrite")
	t.Cleanup(func() { _, _ = kubectl(t, "annotate", "namespace", polNS("x"), "policy.amime.dev/log-") })
	podBin := filepath.Join(filepath.Dir(*amimeBin), "amime-pod")
	eventually(t, 15*time.Second, "verdicts in amime policy log", func() error {
		_, _ = amime(t, "lab", "exec", "-n", polNS("z"), "b", "--", podBin, "workload", "agnhost", "connect", "--timeout=1s", m.ip["x/a"]+":80")
		_, _ = amime(t, "lab", "exec", "-n", polNS("y"), "b", "--", podBin, "workload", "agnhost", "connect", "--timeout=1s", m.ip["x/a"]+":80")
		out, err := amime(t, "policy", "log", "--kubeconfig", kubeconfig, "--node", nodeName(1))
		if err != nil {
			return err
		}
		var deny, allow bool
		for _, l := range strings.Split(out, "\n") {
			deny = deny || (strings.Contains(l, "DENY ingress") && strings.Contains(l, m.ip["z/b"]) && strings.Contains(l, "pol-x/deny-ingress"))
			allow = allow || (strings.Contains(l, "ALLOW ingress") && strings.Contains(l, m.ip["y/b"]) && strings.Contains(l, "policies=pol-x/from-y-80"))
		}
		if !deny || !allow {
			return fmt.Errorf("deny %t allow %t in:\n%s", deny, allow, out)
		}
		return nil
	})
}
