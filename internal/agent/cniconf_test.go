package agent

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"amime.dev/amime/internal/golden"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
)

func prefixes(ss ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestConflist(t *testing.T) {
	tests := []struct {
		name     string
		podCIDRs []netip.Prefix
		mtu      int
		routeMTU int
		ipamDir  string
	}{
		{"ipv4", prefixes("10.244.1.0/24"), 1500, 1450, "/var/lib/amime/ipam"},
		{"dual-stack", prefixes("10.244.1.0/24", "fd00:10:244:1::/64"), 1500, 1450, "/var/lib/amime/ipam"},
		{"ipv6", prefixes("fd00:10:244:1::/64"), 1500, 1430, "/var/lib/amime/ipam"},
		{"native-jumbo", prefixes("10.244.1.0/24"), 9000, 0, "/run/amime/ipam"},
		{"no-ranges", nil, 1500, 1450, "/var/lib/amime/ipam"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := conflist(tt.podCIDRs, tt.mtu, tt.routeMTU, tt.ipamDir, "/var/lib/amime/agent.sock")
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "conflist-"+tt.name, string(b))

			// What a runtime makes of it.
			list, err := libcni.ConfListFromBytes(b)
			if err != nil {
				t.Fatalf("not a valid conflist: %v", err)
			}
			if list.Name != "amime" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "amime" {
				t.Fatalf("conflist %s %s with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
			}
			// A runtime that knows no cniVersions reads a version it speaks
			// if it speaks 1.0.
			var top struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(b, &top); err != nil || top.CNIVersion != "1.0.0" {
				t.Errorf("cniVersion for runtimes without cniVersions: %q, %v; want 1.0.0", top.CNIVersion, err)
			}
			var plugin struct {
				PodCIDRs []string `json:"podCIDRs"`
				MTU      int      `json:"mtu"`
				RouteMTU int      `json:"routeMTU"`
				DataDir  string   `json:"dataDir"`
				Socket   string   `json:"agentSocket"`
			}
			if err := json.Unmarshal(list.Plugins[0].Bytes, &plugin); err != nil {
				t.Fatal(err)
			}
			var got []netip.Prefix
			for _, s := range plugin.PodCIDRs {
				got = append(got, netip.MustParsePrefix(s))
			}
			if plugin.PodCIDRs == nil {
				t.Errorf("podCIDRs is null, want a list")
			}
			if !cmp.Equal(got, tt.podCIDRs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) ||
				plugin.MTU != tt.mtu || plugin.RouteMTU != tt.routeMTU || plugin.DataDir != tt.ipamDir || plugin.Socket != "/var/lib/amime/agent.sock" {
				t.Errorf("plugin configuration %+v, want %v %d %s", plugin, tt.podCIDRs, tt.mtu, tt.ipamDir)
			}
		})
	}
}

func TestWriteConflist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created by the first write
	path := filepath.Join(dir, ConflistName)
	cidrs := prefixes("10.244.1.0/24", "fd00:10:244:1::/64")

	got, err := writeConflist(dir, cidrs, 1500, 1450, "/var/lib/amime/ipam", "/var/lib/amime/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := conflist(cidrs, 1500, 1450, "/var/lib/amime/ipam", "/var/lib/amime/agent.sock")
	if got != string(want) {
		t.Errorf("returned configuration differs from conflist()")
	}
	checkFile := func(want string) os.FileInfo {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Errorf("file holds\n%s\nwant\n%s", b, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", fi.Mode().Perm())
		}
		return fi
	}
	checkFile(got)

	// Unchanged: the file is not rewritten (runtimes watch the directory).
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		again, err := writeConflist(dir, cidrs, 1500, 1450, "/var/lib/amime/ipam", "/var/lib/amime/agent.sock")
		if err != nil {
			t.Fatal(err)
		}
		if again != got {
			t.Errorf("second write returned another configuration")
		}
		if fi := checkFile(got); !fi.ModTime().Equal(old) {
			t.Errorf("unchanged configuration rewritten: mtime %v, was %v", fi.ModTime(), old)
		}
	}

	// Changed (the MTU): rewritten.
	changed, err := writeConflist(dir, cidrs, 1500, 1400, "/var/lib/amime/ipam", "/var/lib/amime/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	if changed == got || !strings.Contains(changed, `"routeMTU": 1400`) {
		t.Errorf("changed configuration:\n%s", changed)
	}
	if fi := checkFile(changed); fi.ModTime().Equal(old) {
		t.Errorf("changed configuration not rewritten")
	}

	// Edited by hand: put back.
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := writeConflist(dir, cidrs, 1500, 1400, "/var/lib/amime/ipam", "/var/lib/amime/agent.sock"); err != nil {
		t.Fatal(err)
	}
	checkFile(changed)

	// Nothing but the configuration is left in the directory.
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 1 || des[0].Name() != ConflistName {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Errorf("directory holds %v, want only %s", names, ConflistName)
	}
}

func TestWriteConflistError(t *testing.T) {
	// The directory is a file.
	dir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := writeConflist(dir, prefixes("10.244.1.0/24"), 1500, 1450, "/x", "/x.sock"); err == nil {
		t.Errorf("writeConflist into a file succeeded")
	}
}

func TestSameFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", "amime plugin v1")
	tests := []struct {
		name    string
		a, b    string
		want    bool
		wantErr bool
	}{
		{"same content", a, write("b", "amime plugin v1"), true, false},
		{"itself", a, a, true, false},
		{"same size, other content", a, write("c", "amime plugin v2"), false, false},
		{"other size", a, write("d", "amime plugin v10"), false, false},
		{"empty files", write("e", ""), write("f", ""), true, false},
		{"b missing", a, filepath.Join(dir, "missing"), false, true},
		{"a missing", filepath.Join(dir, "missing"), a, false, true},
	}
	for _, tt := range tests {
		got, err := sameFile(tt.a, tt.b)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s: sameFile = %v, %v; want %v, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestInstallPlugin(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	binDir := filepath.Join(t.TempDir(), "bin")
	dst := filepath.Join(binDir, "amime")
	if err := installPlugin(binDir); err != nil {
		t.Fatal(err)
	}
	if same, err := sameFile(self, dst); !same || err != nil {
		t.Fatalf("installed plugin differs from the running binary (%v)", err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %v, want 0755", fi.Mode().Perm())
	}

	// Already installed: left alone.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(dst, old, old); err != nil {
		t.Fatal(err)
	}
	if err := installPlugin(binDir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dst); !fi.ModTime().Equal(old) {
		t.Errorf("plugin reinstalled although unchanged")
	}

	// Another version: replaced.
	if err := os.WriteFile(dst, []byte("old plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := installPlugin(binDir); err != nil {
		t.Fatal(err)
	}
	if same, _ := sameFile(self, dst); !same {
		t.Errorf("outdated plugin not replaced")
	}
	des, _ := os.ReadDir(binDir)
	if len(des) != 1 {
		t.Errorf("%d files in the bin directory, want 1 (no temporary files left)", len(des))
	}
}

func TestPluginBinaryPrefersTheLeanPlugin(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "amime")
	lean := filepath.Join(dir, "amime-cni")
	if err := os.WriteFile(self, []byte("full"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := pluginBinary(self); got != self {
		t.Errorf("without amime-cni: %s, want the running binary %s", got, self)
	}
	if err := os.WriteFile(lean, []byte("lean"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := pluginBinary(self); got != self {
		t.Errorf("with a non-executable amime-cni: %s, want the running binary", got)
	}
	if err := os.Chmod(lean, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := pluginBinary(self); got != lean {
		t.Errorf("with amime-cni: %s, want %s", got, lean)
	}
	binDir := filepath.Join(dir, "opt-cni-bin")
	if err := installFile(pluginBinary(self), binDir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(binDir, "amime")); string(b) != "lean" {
		t.Errorf("installed %q, want the lean plugin", b)
	}
}
