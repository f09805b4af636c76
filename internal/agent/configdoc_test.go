package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestConfigMapDocMatchesManifests: the documented keys of amime-config are
// exactly those the manifests of deploy/ read.
func TestConfigMapDocMatchesManifests(t *testing.T) {
	files, err := filepath.Glob("../../deploy/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/: %v", err)
	}
	ref := regexp.MustCompile(`configMapKeyRef:\s*\{name:\s*amime-config,\s*key:\s*([a-z-]+)`)
	read := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			read[m[1]] = true
		}
	}
	var documented []string
	for _, k := range ConfigMapDoc().Keys {
		documented = append(documented, k.Name)
	}
	var want []string
	for k := range read {
		want = append(want, k)
	}
	sort.Strings(documented)
	sort.Strings(want)
	if strings.Join(documented, ",") != strings.Join(want, ",") {
		t.Errorf("documented keys %v, manifests read %v", documented, want)
	}
}
