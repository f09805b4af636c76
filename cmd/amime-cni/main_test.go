package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStaysLean guards the reason this binary exists: it must not link the
// heavy packages of the full amime binary, whose initialisation alone costs
// each CNI call about 10 ms.
func TestStaysLean(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, heavy := range []string{"k8s.io/client-go", "k8s.io/api/", "k8s.io/apimachinery", "github.com/spf13/", "github.com/prometheus/", "github.com/miekg/dns"} {
			if strings.HasPrefix(dep, heavy) {
				t.Errorf("amime-cni links %s", dep)
			}
		}
	}
}
