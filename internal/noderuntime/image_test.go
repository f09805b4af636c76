package noderuntime

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestImageRef(t *testing.T) {
	tests := []struct {
		image    string
		wantRepo string
		wantTag  string
	}{
		{"busybox", "busybox", "latest"},
		{"busybox:1.36", "busybox", "1.36"},
		{"library/busybox:1.36", "busybox", "1.36"},
		{"docker.io/busybox", "busybox", "latest"},
		{"docker.io/library/busybox:1.36.1-musl", "busybox", "1.36.1-musl"},
		{"index.docker.io/library/nginx:1.27", "nginx", "1.27"},
		{"nicolaka/netshoot:v0.13", "nicolaka/netshoot", "v0.13"},
		{"docker.io/nicolaka/netshoot", "nicolaka/netshoot", "latest"},
		{"registry.k8s.io/e2e-test-images/agnhost:2.52", "e2e-test-images/agnhost", "2.52"},
		{"gcr.io/kubernetes-e2e-test-images/agnhost:2.8", "kubernetes-e2e-test-images/agnhost", "2.8"},
		{"registry.k8s.io/pause:3.10", "pause", "3.10"},
		{"k8s.gcr.io/google_containers/pause:3.1", "google_containers/pause", "3.1"},
		// Registry hosts with a port: the port is not a tag.
		{"localhost:5000/x:1", "x", "1"},
		{"localhost:5000/x", "x", "latest"},
		{"localhost/x:2", "x", "2"},
		{"localhost/team/x", "team/x", "latest"},
		{"registry.example.com:8443/team/app:v2", "team/app", "v2"},
		{"[::1]:5000/app:v3", "app", "v3"},
		// Digests are dropped; a tag before the digest is kept.
		{"nginx@sha256:0123456789abcdef", "nginx", "latest"},
		{"nginx:1.27@sha256:0123456789abcdef", "nginx", "1.27"},
		{"ghcr.io/amime-dev/amime:v0.1.0@sha256:ffff", "amime-dev/amime", "v0.1.0"},
		// A first component without '.', ':' and not "localhost" is a Docker Hub user.
		{"myuser/busybox:1", "myuser/busybox", "1"},
		// "library/" is dropped only for the two-component form.
		{"library/team/x", "library/team/x", "latest"},
		{"amime", "amime", "latest"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			repo, tag := imageRef(tt.image)
			if repo != tt.wantRepo || tag != tt.wantTag {
				t.Errorf("imageRef(%q) = (%q, %q), want (%q, %q)", tt.image, repo, tag, tt.wantRepo, tt.wantTag)
			}
		})
	}
}

func TestIsAmimeImage(t *testing.T) {
	for repo, want := range map[string]bool{
		"amime":           true,
		"amime-dev/amime": true,
		"a/b/amime":       true,
		"amimex":          false,
		"amime/agent":     false,
		"busybox":         false,
	} {
		if got := isAmimeImage(repo); got != want {
			t.Errorf("isAmimeImage(%q) = %v, want %v", repo, got, want)
		}
	}
}

// fakeLook is a lookPath that knows only the given programs: bare names resolve
// under /host/bin, absolute names resolve to themselves.
func fakeLook(installed ...string) lookPathFunc {
	return func(name string) (string, error) {
		for _, n := range installed {
			if n != name {
				continue
			}
			if strings.HasPrefix(name, "/") {
				return name, nil
			}
			return "/host/bin/" + name, nil
		}
		return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
	}
}

func TestContainerArgv(t *testing.T) {
	const bin = "/opt/amime/bin/amime"
	const podBin = "/opt/amime/bin/amime-pod"
	look := fakeLook("sh", "bash", "zsh", "curl", "sleep", "/bin/sh", "wget")
	tests := []struct {
		name    string
		image   string
		command []string
		args    []string
		look    lookPathFunc // default: look
		want    []string
		wantErr string // exact error text when set
	}{
		// amime's own image: the entrypoint is the amime binary.
		{name: "amime command amime agent", image: "amime:dev", command: []string{"amime", "agent"}, args: []string{"--node=n1"},
			want: []string{bin, "agent", "--node=n1"}},
		{name: "amime command absolute path", image: "ghcr.io/amime-dev/amime:v1", command: []string{"/usr/local/bin/amime", "x"},
			want: []string{bin, "x"}},
		{name: "amime args only", image: "localhost:5000/amime", args: []string{"agent", "--v=2"},
			want: []string{bin, "agent", "--v=2"}},
		{name: "amime nothing", image: "amime", want: []string{bin}},
		{name: "amime shell command runs on host", image: "amime:dev", command: []string{"/bin/sh", "-c", "amime agent"}, args: []string{"extra"},
			want: []string{"/bin/sh", "-c", "amime agent", "extra"}},
		{name: "amime other command missing on host", image: "amime:dev", command: []string{"tcpdump", "-i", "eth0"},
			wantErr: `image "amime:dev" runs its command on the host, but "tcpdump" is not installed here: exec: "tcpdump": executable file not found in $PATH`},

		// agnhost.
		{name: "agnhost full command", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"/agnhost", "netexec", "--http-port=8080"},
			want: []string{podBin, "workload", "agnhost", "netexec", "--http-port=8080"}},
		{name: "agnhost command and args", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"/agnhost"}, args: []string{"serve-hostname", "--port=9376"},
			want: []string{podBin, "workload", "agnhost", "serve-hostname", "--port=9376"}},
		{name: "agnhost bare command name", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"agnhost", "pause"},
			want: []string{podBin, "workload", "agnhost", "pause"}},
		{name: "agnhost args only", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", args: []string{"netexec", "--http-port=8080", "--udp-port=8081"},
			want: []string{podBin, "workload", "agnhost", "netexec", "--http-port=8080", "--udp-port=8081"}},
		{name: "agnhost old registry", image: "gcr.io/kubernetes-e2e-test-images/agnhost:2.8", args: []string{"pause"},
			want: []string{podBin, "workload", "agnhost", "pause"}},
		{name: "agnhost no args prints help", image: "registry.k8s.io/e2e-test-images/agnhost:2.52",
			want: []string{podBin, "workload", "agnhost", "--help"}},
		{name: "agnhost command only entrypoint prints help", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"/agnhost"},
			want: []string{podBin, "workload", "agnhost", "--help"}},
		{name: "agnhost shell command runs on host", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"/bin/sh", "-c", "sleep 1"},
			want: []string{"/bin/sh", "-c", "sleep 1"}},
		{name: "agnhost bare shell plus args", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"sh", "-c"}, args: []string{"echo hi"},
			want: []string{"/host/bin/sh", "-c", "echo hi"}},
		{name: "agnhost shell missing on host", image: "registry.k8s.io/e2e-test-images/agnhost:2.52", command: []string{"/bin/sh", "-c", "x"}, look: fakeLook(),
			wantErr: `image "registry.k8s.io/e2e-test-images/agnhost:2.52" runs its command on the host, but "/bin/sh" is not installed here: exec: "/bin/sh": executable file not found in $PATH`},

		// pause.
		{name: "pause", image: "registry.k8s.io/pause:3.10", want: []string{podBin, "workload", "pause"}},
		{name: "pause google_containers", image: "k8s.gcr.io/google_containers/pause:3.1", want: []string{podBin, "workload", "pause"}},
		{name: "pause google-containers", image: "gcr.io/google-containers/pause", want: []string{podBin, "workload", "pause"}},

		// nginxdemos/hello.
		{name: "hello", image: "nginxdemos/hello", want: []string{podBin, "workload", "hello"}},
		{name: "hello latest with args", image: "docker.io/nginxdemos/hello:latest", args: []string{"--x"}, want: []string{podBin, "workload", "hello", "--x"}},
		{name: "hello plain-text", image: "nginxdemos/hello:plain-text", want: []string{podBin, "workload", "hello-plain"}},
		{name: "nginx-hello plain-text", image: "nginxdemos/nginx-hello:plain-text", want: []string{podBin, "workload", "hello-plain"}},
		{name: "nginx exporter", image: "nginx/nginx-prometheus-exporter:1.4", args: []string{"--nginx.scrape-uri=http://127.0.0.1/"}, want: []string{podBin, "workload", "nginx-exporter", "--nginx.scrape-uri=http://127.0.0.1/"}},
		{name: "hello custom command", image: "nginxdemos/hello:plain-text", command: []string{"nginx"},
			wantErr: `image "nginxdemos/hello:plain-text" is mapped to amime's built-in hello-plain server, which cannot run the custom command "nginx"`},

		// nginx.
		{name: "nginx", image: "nginx:1.27", want: []string{podBin, "workload", "nginx"}},
		{name: "nginx docker hub library", image: "docker.io/library/nginx:alpine", want: []string{podBin, "workload", "nginx"}},
		{name: "nginx unprivileged", image: "nginxinc/nginx-unprivileged", want: []string{podBin, "workload", "nginx"}},
		{name: "bitnami nginx", image: "bitnami/nginx:1.25", want: []string{podBin, "workload", "nginx"}},
		{name: "nginx custom command", image: "nginx:1.27", command: []string{"nginx", "-g", "daemon off;"},
			wantErr: `image "nginx:1.27" is mapped to amime's built-in nginx server, which cannot run the custom command "nginx -g daemon off;"`},

		// Host tool images.
		{name: "busybox command", image: "busybox", command: []string{"sh", "-c", "echo hi"},
			want: []string{"/host/bin/sh", "-c", "echo hi"}},
		{name: "busybox command and args", image: "busybox:1.36", command: []string{"sleep"}, args: []string{"3600"},
			want: []string{"/host/bin/sleep", "3600"}},
		{name: "busybox default command", image: "docker.io/library/busybox:1.36", want: []string{"/host/bin/sh"}},
		// kubectl run bb --image=busybox -- sleep 3600: args replace busybox's CMD
		// (it has no ENTRYPOINT), so the args are the whole command.
		{name: "busybox args only", image: "busybox", args: []string{"sleep", "3600"},
			want: []string{"/host/bin/sleep", "3600"}},
		{name: "alpine default command", image: "alpine:3.20", want: []string{"/host/bin/sh"}},
		{name: "debian default command", image: "debian:12", want: []string{"/host/bin/bash"}},
		{name: "e2e busybox default", image: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", want: []string{"/host/bin/sh"}},
		{name: "netshoot default command", image: "nicolaka/netshoot", want: []string{"/host/bin/zsh"}},
		{name: "netshoot command", image: "nicolaka/netshoot:v0.13", command: []string{"curl", "-s", "http://web"},
			want: []string{"/host/bin/curl", "-s", "http://web"}},
		{name: "netshoot args only", image: "nicolaka/netshoot", args: []string{"sh", "-c", "sleep 1"},
			want: []string{"/host/bin/sh", "-c", "sleep 1"}},
		{name: "curl default command", image: "curlimages/curl", want: []string{"/host/bin/curl"}},
		// curlimages/curl has an ENTRYPOINT that runs curl with the args.
		{name: "curl args only", image: "curlimages/curl:8.10.1", args: []string{"-sS", "http://web/"},
			want: []string{"/host/bin/curl", "-sS", "http://web/"}},
		{name: "curl command", image: "curlimages/curl", command: []string{"sh", "-c", "curl web"},
			want: []string{"/host/bin/sh", "-c", "curl web"}},
		{name: "image without default command", image: "registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
			wantErr: `image "registry.k8s.io/e2e-test-images/httpd:2.4.39-4" has no command the lab can run on the host: give the container a command`},
		{name: "image without default command but a command", image: "registry.k8s.io/e2e-test-images/httpd:2.4.39-4", command: []string{"sleep", "1"},
			want: []string{"/host/bin/sleep", "1"}},
		{name: "host tool missing", image: "busybox", command: []string{"nslookup", "kubernetes.default"},
			wantErr: `image "busybox" runs its command on the host, but "nslookup" is not installed here: exec: "nslookup": executable file not found in $PATH`},
		{name: "default command missing on host", image: "ubuntu:24.04", look: fakeLook("sh"),
			wantErr: `image "ubuntu:24.04" runs its command on the host, but "bash" is not installed here: exec: "bash": executable file not found in $PATH`},

		// Unknown images.
		{name: "unknown image", image: "quay.io/foo/bar:1",
			wantErr: `image "quay.io/foo/bar:1" is not mapped in the amime lab (images are mapped to local programs, not pulled); mapped images: amime, agnhost, pause, nginx, nginxdemos/hello, and tool images such as busybox, alpine, nicolaka/netshoot, curlimages/curl that run their command on the host`},
		{name: "unknown image with command", image: "redis:7", command: []string{"sh"},
			wantErr: `image "redis:7" is not mapped in the amime lab (images are mapped to local programs, not pulled); mapped images: amime, agnhost, pause, nginx, nginxdemos/hello, and tool images such as busybox, alpine, nicolaka/netshoot, curlimages/curl that run their command on the host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &corev1.Container{Name: "c", Image: tt.image, Command: tt.command, Args: tt.args}
			orig := c.DeepCopy()
			l := tt.look
			if l == nil {
				l = look
			}
			got, err := containerArgv(c, bin, podBin, l)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("containerArgv() = %q, want error %q", got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("containerArgv() error:\n got  %s\n want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("containerArgv() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("containerArgv() argv mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(orig, c); diff != "" {
				t.Errorf("containerArgv() modified the container (-before +after):\n%s", diff)
			}
		})
	}
}

func TestContainerArgvUnknownImageMentionsNotMapped(t *testing.T) {
	_, err := containerArgv(&corev1.Container{Image: "example.com/acme/widget:3"}, "/amime", "/amime-pod", fakeLook())
	if err == nil {
		t.Fatal("want an error for an unknown image")
	}
	for _, want := range []string{`"example.com/acme/widget:3"`, "not mapped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestContainerArgvLooksUpOnlyForHostCommands(t *testing.T) {
	var looked []string
	look := func(name string) (string, error) {
		looked = append(looked, name)
		return "/x/" + name, nil
	}
	for _, image := range []string{"amime", "nginx", "registry.k8s.io/pause:3.10", "nginxdemos/hello"} {
		if _, err := containerArgv(&corev1.Container{Image: image}, "/amime", "/amime-pod", look); err != nil {
			t.Fatalf("%s: %v", image, err)
		}
	}
	if len(looked) != 0 {
		t.Errorf("built-in images looked up host programs %q", looked)
	}
	if _, err := containerArgv(&corev1.Container{Image: "busybox", Command: []string{"ping", "-c1", "x"}}, "/amime", "/amime-pod", look); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ping"}, looked); diff != "" {
		t.Errorf("looked up (-want +got):\n%s", diff)
	}
}
