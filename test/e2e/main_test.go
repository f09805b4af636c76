//go:build e2e

// Package e2e tests amime against a real lab: one lab, named "e2e" and on its own
// addresses, is shared by the whole suite and taken down by the last test.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	amimeBin = flag.String("amime-bin", "../../bin/amime", "the amime binary under test")
	keep     = flag.Bool("keep", false, "leave the lab up after the tests")
	labFlag  = flag.String("lab", "e2e", "which of the suite's labs to use (e2e, e2e2, e2e3: same shape, own addresses), so that runs of parts of the suite can go side by side")
)

// suiteLab is the shape of a lab the suite brings up: three nodes on ranges of
// its own, so that it never overlaps a lab the user runs.
type suiteLab struct {
	podCIDR, podCIDRv6, underlay, underlayV6, etcdPort string
	// underlayBase is the underlay's first three octets; node i is .10+i.
	underlayBase string
}

var suiteLabs = map[string]suiteLab{
	"e2e":  {"10.240.0.0/16", "fd00:10:240::/56", "172.30.9.0/24", "fd00:a:e9::/64", "12479", "172.30.9"},
	"e2e2": {"10.241.0.0/16", "fd00:10:241::/56", "172.30.12.0/24", "fd00:a:ec::/64", "12879", "172.30.12"},
	"e2e3": {"10.242.0.0/16", "fd00:10:242::/56", "172.30.13.0/24", "fd00:a:ed::/64", "12979", "172.30.13"},
}

// labName is the suite's lab; tests that name nodes use nodeName and nodeIP.
var labName = "e2e"

// labFlags keep the suite's lab apart from a lab the user may be running.
var labFlags []string

var upFlags []string

// nodeName is the name of the lab's node i (1-based).
func nodeName(i int) string { return fmt.Sprintf("%s-node-%d", labName, i) }

// nodeIP is the underlay IPv4 address of the lab's node i (1-based).
func nodeIP(i int) string { return fmt.Sprintf("%s.%d", suiteLabs[labName].underlayBase, 10+i) }

var (
	cs         *kubernetes.Clientset
	kubeconfig string
)

func TestMain(m *testing.M) {
	flag.Parse()
	l, ok := suiteLabs[*labFlag]
	if !ok {
		fmt.Printf("e2e: unknown -lab %q (e2e, e2e2 or e2e3)\n", *labFlag)
		os.Exit(2)
	}
	labName = *labFlag
	labFlags = []string{"--name", labName}
	upFlags = []string{"--nodes", "3", "--pod-cidr", l.podCIDR, "--pod-cidr-v6", l.podCIDRv6, "--underlay", l.underlay, "--underlay-v6", l.underlayV6, "--etcd-port", l.etcdPort}
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, the lab needs root")
		os.Exit(0)
	}
	bin, err := filepath.Abs(*amimeBin)
	if err != nil {
		panic(err)
	}
	*amimeBin = bin
	// A previous run may have crashed: start clean.
	_, _ = run(context.Background(), *amimeBin, append([]string{"lab", "down"}, labFlags...)...)
	start := time.Now()
	out, err := run(context.Background(), *amimeBin, append(append([]string{"lab", "up"}, labFlags...), upFlags...)...)
	fmt.Print(out)
	if err != nil {
		fmt.Println("e2e: lab up failed:", err)
		_, _ = run(context.Background(), *amimeBin, append([]string{"lab", "down"}, labFlags...)...)
		os.Exit(1)
	}
	fmt.Printf("e2e: lab up in %.1fs\n", time.Since(start).Seconds())
	out, err = run(context.Background(), *amimeBin, append([]string{"lab", "kubeconfig"}, labFlags...)...)
	if err != nil {
		fmt.Println("e2e:", err)
		os.Exit(1)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	kubeconfig = lines[len(lines)-1]
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Println("e2e:", err)
		os.Exit(1)
	}
	cs = kubernetes.NewForConfigOrDie(cfg)
	code := m.Run()
	if *keep {
		fmt.Printf("e2e: lab left up: export KUBECONFIG=%s\n", kubeconfig)
	} else {
		_, _ = run(context.Background(), *amimeBin, append([]string{"lab", "down"}, labFlags...)...)
	}
	os.Exit(code)
}

// run runs a command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

// kubectl runs the real kubectl against the lab. Its output keeps stderr (a
// command run by `kubectl exec` writes there) but not client-go's own log lines
// ("E1122 06:03:39.508894 21289 websocket.go:296] Unknown stream id 1, …"),
// which it prints now and then on an exec stream and which are no part of what
// the command printed.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := run(context.Background(), "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	return klogLine.ReplaceAllString(out, ""), err
}

var klogLine = regexp.MustCompile(`(?m)^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.-]+:\d+\] .*\n`)

// mustKubectl fails the test when kubectl fails.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply applies a manifest given as text.
func apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// amime runs the amime CLI against the suite's lab.
func amime(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(context.Background(), *amimeBin, withLabFlags(args)...)
}

// withLabFlags puts the test lab's flags after a "lab" subcommand.
func withLabFlags(args []string) []string {
	if len(args) >= 2 && args[0] == "lab" {
		return append(append([]string{"lab", args[1]}, labFlags...), args[2:]...)
	}
	return args
}

// eventually polls fn until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// namespace creates a namespace for one test and deletes it at the end.
func namespace(t *testing.T, name string) string {
	t.Helper()
	mustKubectl(t, "create", "namespace", name)
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "namespace", name, "--wait=false")
	})
	return name
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}
