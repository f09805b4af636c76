package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	"amime.dev/amime/internal/atomicfile"
)

// ConflistName is the file the agent owns in the CNI configuration directory. Its
// name sorts early so that runtimes, which take the first file, pick it.
const ConflistName = "10-amime.conflist"

// conflist renders the node's CNI configuration.
func conflist(podCIDRs []netip.Prefix, mtu, routeMTU int, ipamDir, attachSocket string) ([]byte, error) {
	cidrs := make([]string, len(podCIDRs))
	for i, p := range podCIDRs {
		cidrs[i] = p.String()
	}
	plugin := map[string]any{
		"type":     "amime",
		"podCIDRs": cidrs,
		"mtu":      mtu,
		"dataDir":  ipamDir,
		// Where ADD reports a new pod and waits until the agent knows it.
		"agentSocket": attachSocket,
	}
	if routeMTU != 0 {
		plugin["routeMTU"] = routeMTU
	}
	// A runtime whose libcni knows cniVersions (1.2 and later) takes the
	// highest of them it speaks, 1.1.0 with GC and STATUS; an older one
	// reads cniVersion alone and would refuse a version it does not know.
	conf := map[string]any{
		"cniVersion":  "1.0.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        "amime",
		"plugins":     []any{plugin},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// writeConflist writes the configuration when it changed and returns it.
func writeConflist(dir string, podCIDRs []netip.Prefix, mtu, routeMTU int, ipamDir, attachSocket string) (string, error) {
	b, err := conflist(podCIDRs, mtu, routeMTU, ipamDir, attachSocket)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, ConflistName)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		return string(b), nil
	}
	return string(b), atomicfile.Write(path, b, 0o644)
}

// pluginBinary is the amime CNI plugin shipped with the running binary: the
// lean amime-cni beside it when there is one (a runtime execs the plugin for
// every pod, and the small binary starts several times faster), else the
// running amime binary itself, which is also a complete plugin.
func pluginBinary(self string) string {
	if p := filepath.Join(filepath.Dir(self), "amime-cni"); isExecutable(p) {
		return p
	}
	return self
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// installPlugin copies the plugin (see pluginBinary) to <binDir>/amime, where
// runtimes look for the plugin named by the configuration's "type". It is
// replaced atomically and only when its content differs.
func installPlugin(binDir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return installFile(pluginBinary(self), binDir)
}

// installFile copies src to <binDir>/amime (see installPlugin).
func installFile(src, binDir string) error {
	dst := filepath.Join(binDir, "amime")
	if same, _ := sameFile(src, dst); same {
		return nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(binDir, ".amime.tmp*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// sameFile compares size and content.
func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil || sa.Size() != sb.Size() {
		return false, err
	}
	fa, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	fb, err := os.ReadFile(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(fa, fb), nil
}
