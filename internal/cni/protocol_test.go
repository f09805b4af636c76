package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// runPlugin runs this test binary as the plugin (see TestMain) with env and
// stdin, without CNI_PATH unless env sets it, and returns what it printed and
// its exit code.
func runPlugin(t *testing.T, env []string, stdin string) (map[string]any, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	code := 0
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	got := map[string]any{}
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("output %q is not JSON: %v", out.String(), err)
		}
	}
	return got, code
}

// TestProtocol: what the runtime reads on stdout, as the spec words it —
// VERSION under the input's version, errors with the version in use, and
// CNI_PATH optional where the spec makes it so.
func TestProtocol(t *testing.T) {
	dataDir := t.TempDir()
	conf := func(version, cidrs string) string {
		return `{"cniVersion":"` + version + `","name":"amime","type":"amime","podCIDRs":` + cidrs + `,"dataDir":"` + dataDir + `"}`
	}
	for _, tc := range []struct {
		name     string
		env      []string
		stdin    string
		wantCode int
		want     map[string]any // keys that must have these values
	}{
		{
			name: "VERSION echoes the input's version", env: []string{"CNI_COMMAND=VERSION"},
			stdin: `{"cniVersion":"0.4.0"}`, want: map[string]any{"cniVersion": "0.4.0"},
		},
		{
			name: "VERSION without input", env: []string{"CNI_COMMAND=VERSION"},
			want: map[string]any{"cniVersion": "1.1.0"},
		},
		{
			name: "VERSION with broken input", env: []string{"CNI_COMMAND=VERSION"}, stdin: `{`,
			wantCode: 1, want: map[string]any{"cniVersion": "1.1.0", "code": 6.0},
		},
		{
			name: "error under the configuration's version",
			env:  []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0"}, stdin: conf("1.0.0", `["nope"]`),
			wantCode: 1, want: map[string]any{"cniVersion": "1.0.0", "code": 7.0},
		},
		{
			name: "error before the configuration is read",
			env:  []string{"CNI_COMMAND=ADD", "CNI_NETNS=/var/run/netns/x", "CNI_IFNAME=eth0"}, stdin: conf("1.0.0", `[]`),
			wantCode: 1, want: map[string]any{"cniVersion": "1.1.0", "code": 4.0},
		},
		{
			name:  "ADD into a namespace that does not exist",
			env:   []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_NETNS=/var/run/netns/amime-test-none", "CNI_IFNAME=eth0"},
			stdin: conf("1.1.0", `["10.244.1.0/24"]`), wantCode: 1,
			want: map[string]any{"cniVersion": "1.1.0", "code": 4.0, "msg": "CNI_NETNS: cannot open network namespace /var/run/netns/amime-test-none"},
		},
		{
			name: "STATUS without CNI_PATH", env: []string{"CNI_COMMAND=STATUS"}, stdin: conf("1.1.0", `["10.244.1.0/24"]`),
		},
		{
			name: "DEL without CNI_PATH", env: []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0"},
			stdin: conf("1.1.0", `["10.244.1.0/24"]`),
		},
		{
			name: "GC without CNI_PATH", env: []string{"CNI_COMMAND=GC"}, stdin: conf("1.1.0", `["10.244.1.0/24"]`),
			wantCode: 1, want: map[string]any{"code": 4.0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, code := runPlugin(t, tc.env, tc.stdin)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (output %v)", code, tc.wantCode, got)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (output %v)", k, got[k], v, got)
				}
			}
		})
	}
	got, _ := runPlugin(t, []string{"CNI_COMMAND=VERSION"}, `{"cniVersion":"1.0.0"}`)
	var versions []string
	for _, v := range got["supportedVersions"].([]any) {
		versions = append(versions, v.(string))
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(versions, v) {
			t.Errorf("supportedVersions %v lacks %s", versions, v)
		}
	}
}
