package noderuntime

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func downwardPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "shop", UID: "1f0e2d3c-aaaa-bbbb-cccc-000000000001",
			Labels:      map[string]string{"app": "web", "tier": "front end", "app.kubernetes.io/name": "web"},
			Annotations: map[string]string{"note": `say "hi"`, "multi": "a\nb"},
		},
		Spec: corev1.PodSpec{NodeName: "lab-node-2", ServiceAccountName: "web-sa"},
	}
}

func TestDownwardField(t *testing.T) {
	podIPs := []string{"10.244.2.7", "fd00:10:244:2::7"}
	hostIPs := []string{"172.30.0.12", "fd00:a:e::c"}
	tests := []struct {
		path    string
		podIPs  []string
		hostIPs []string
		want    string
		wantErr string
	}{
		{path: "metadata.name", want: "web-0"},
		{path: "metadata.namespace", want: "shop"},
		{path: "metadata.uid", want: "1f0e2d3c-aaaa-bbbb-cccc-000000000001"},
		{path: "spec.nodeName", want: "lab-node-2"},
		{path: "spec.serviceAccountName", want: "web-sa"},
		{path: "status.podIP", podIPs: podIPs, want: "10.244.2.7"},
		{path: "status.podIPs", podIPs: podIPs, want: "10.244.2.7,fd00:10:244:2::7"},
		{path: "status.podIP", want: ""},
		{path: "status.podIPs", want: ""},
		{path: "status.hostIP", hostIPs: hostIPs, want: "172.30.0.12"},
		{path: "status.hostIPs", hostIPs: hostIPs, want: "172.30.0.12,fd00:a:e::c"},
		{path: "status.hostIP", want: ""},
		{path: "metadata.labels", want: "app=\"web\"\napp.kubernetes.io/name=\"web\"\ntier=\"front end\""},
		{path: "metadata.annotations", want: "multi=\"a\\nb\"\nnote=\"say \\\"hi\\\"\""},
		{path: "metadata.labels['app']", want: "web"},
		{path: "metadata.labels['app.kubernetes.io/name']", want: "web"},
		{path: "metadata.labels['missing']", want: ""},
		{path: "metadata.annotations['note']", want: `say "hi"`},
		{path: "metadata.annotations['multi']", want: "a\nb"},
		{path: "metadata.generateName", wantErr: `unsupported fieldRef "metadata.generateName"`},
		{path: "status.phase", wantErr: `unsupported fieldRef "status.phase"`},
		{path: "metadata.labels[app]", wantErr: `unsupported fieldRef "metadata.labels[app]"`},
		{path: "metadata.labels['app'", wantErr: `unsupported fieldRef "metadata.labels['app'"`},
		{path: "", wantErr: `unsupported fieldRef ""`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := downwardField(downwardPod(), tt.path, tt.podIPs, tt.hostIPs)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("downwardField(%q) = %q, %v; want error %q", tt.path, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("downwardField(%q) error: %v", tt.path, err)
			}
			if got != tt.want {
				t.Errorf("downwardField(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestDownwardFieldEmptyMaps(t *testing.T) {
	pod := &corev1.Pod{}
	for _, path := range []string{"metadata.labels", "metadata.annotations", "metadata.labels['x']"} {
		got, err := downwardField(pod, path, nil, nil)
		if err != nil || got != "" {
			t.Errorf("downwardField(%q) on an empty pod = %q, %v; want empty", path, got, err)
		}
	}
}

func TestPodWorkerFieldRef(t *testing.T) {
	w := &podWorker{
		r:       &Runtime{opts: Options{NodeIPs: []netip.Addr{netip.MustParseAddr("172.30.0.12"), netip.MustParseAddr("fd00:a:e::c")}}},
		sandbox: &sandboxState{IPs: []string{"10.244.2.7"}},
	}
	for path, want := range map[string]string{
		"status.podIP":   "10.244.2.7",
		"status.hostIPs": "172.30.0.12,fd00:a:e::c",
		"metadata.name":  "web-0",
	} {
		got, err := w.fieldRef(downwardPod(), path)
		if err != nil || got != want {
			t.Errorf("fieldRef(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	// Without a sandbox there is no pod IP yet.
	w.sandbox = nil
	if got, err := w.fieldRef(downwardPod(), "status.podIP"); err != nil || got != "" {
		t.Errorf("fieldRef(status.podIP) without sandbox = %q, %v; want empty", got, err)
	}
}

func TestResourceField(t *testing.T) {
	c := &corev1.Container{Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("500m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("250m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		},
	}}
	bare := &corev1.Container{}
	tests := []struct {
		name     string
		c        *corev1.Container
		resource string
		divisor  string
		want     string
	}{
		{name: "cpu limit rounds up to cores", c: c, resource: "limits.cpu", want: "1"},
		{name: "cpu limit in millicores", c: c, resource: "limits.cpu", divisor: "1m", want: "500"},
		{name: "cpu request in millicores", c: c, resource: "requests.cpu", divisor: "1m", want: "250"},
		{name: "cpu request rounds up", c: c, resource: "requests.cpu", divisor: "100m", want: "3"},
		{name: "memory limit in bytes", c: c, resource: "limits.memory", want: "134217728"},
		{name: "memory limit in Mi", c: c, resource: "limits.memory", divisor: "1Mi", want: "128"},
		{name: "memory request in Ki", c: c, resource: "requests.memory", divisor: "1Ki", want: "65536"},
		{name: "memory limit rounds up", c: c, resource: "limits.memory", divisor: "100Mi", want: "2"},
		{name: "no cpu limit: node CPUs", c: bare, resource: "limits.cpu", want: fmt.Sprint(runtime.NumCPU())},
		{name: "no cpu limit in millicores", c: bare, resource: "limits.cpu", divisor: "1m", want: fmt.Sprint(runtime.NumCPU() * 1000)},
		{name: "no memory limit: node memory", c: bare, resource: "limits.memory", want: fmt.Sprint(memTotal())},
		{name: "unknown resource without limit", c: bare, resource: "limits.ephemeral-storage", want: "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := &corev1.ResourceFieldSelector{Resource: tt.resource}
			if tt.divisor != "" {
				ref.Divisor = resource.MustParse(tt.divisor)
			}
			if got := (&podWorker{}).resourceField(tt.c, ref); got != tt.want {
				t.Errorf("resourceField(%s, divisor %q) = %q, want %q", tt.resource, tt.divisor, got, tt.want)
			}
		})
	}
}

func TestEnvList(t *testing.T) {
	l := newEnvList()
	l.set("B", "1")
	l.set("A", "2")
	l.set("B", "3") // overrides in place, keeps B first
	l.set("C", "x=y")
	l.set("EMPTY", "")
	if diff := cmp.Diff([]string{"B=3", "A=2", "C=x=y", "EMPTY="}, l.environ()); diff != "" {
		t.Errorf("environ() mismatch (-want +got):\n%s", diff)
	}
	for k, want := range map[string]string{"A": "2", "B": "3", "C": "x=y", "EMPTY": ""} {
		if v, ok := l.lookup(k); !ok || v != want {
			t.Errorf("lookup(%q) = %q, %v; want %q, true", k, v, ok, want)
		}
	}
	if v, ok := l.lookup("MISSING"); ok {
		t.Errorf("lookup(MISSING) = %q, true; want not found", v)
	}
	if got := newEnvList().environ(); len(got) != 0 {
		t.Errorf("empty list environ() = %q", got)
	}
}

func TestEnvListWithExpansion(t *testing.T) {
	// The order containerEnv follows: service variables, then env entries that
	// may refer to what came before.
	l := newEnvList()
	for _, e := range serviceEnv(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web"}},
		[]*corev1.Service{svc("web", "api", "10.96.3.4", port("http", 8080, corev1.ProtocolTCP))}) {
		l.set(e.Name, e.Value)
	}
	for _, e := range []corev1.EnvVar{
		{Name: "URL", Value: "http://$(API_SERVICE_HOST):$(API_SERVICE_PORT_HTTP)/v1"},
		{Name: "LATER", Value: "$(DEFINED_LATER)"},
		{Name: "DEFINED_LATER", Value: "x"},
		{Name: "API_SERVICE_HOST", Value: "override"},
	} {
		l.set(e.Name, expandVars(e.Value, l.lookup))
	}
	want := map[string]string{
		"URL":              "http://10.96.3.4:8080/v1",
		"LATER":            "$(DEFINED_LATER)",
		"API_SERVICE_HOST": "override",
	}
	for k, w := range want {
		if v, _ := l.lookup(k); v != w {
			t.Errorf("%s = %q, want %q", k, v, w)
		}
	}
	if got := l.environ()[0]; got != "API_SERVICE_HOST=override" {
		t.Errorf("first variable = %q, want the overridden service host kept in its place", got)
	}
}

func TestEnvLookup(t *testing.T) {
	look := envLookup([]string{"A=1", "B=x=y", "EMPTY=", "NOEQ", "=novar", "A=2"})
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"A", "2", true}, // the last one wins
		{"B", "x=y", true},
		{"EMPTY", "", true},
		{"NOEQ", "", false},
		{"", "", false},
		{"MISSING", "", false},
	}
	for _, tt := range tests {
		v, ok := look(tt.key)
		if v != tt.want || ok != tt.wantOK {
			t.Errorf("lookup(%q) = %q, %v; want %q, %v", tt.key, v, ok, tt.want, tt.wantOK)
		}
	}
}

func TestFormatMap(t *testing.T) {
	tests := []struct {
		m    map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"a": "1"}, `a="1"`},
		{map[string]string{"b": "2", "a": "1", "c": ""}, "a=\"1\"\nb=\"2\"\nc=\"\""},
		{map[string]string{"q": `"x"`, "nl": "l1\nl2", "u": "é"}, "nl=\"l1\\nl2\"\nq=\"\\\"x\\\"\"\nu=\"é\""},
	}
	for _, tt := range tests {
		if got := formatMap(tt.m); got != tt.want {
			t.Errorf("formatMap(%v) = %q, want %q", tt.m, got, tt.want)
		}
	}
}
