package noderuntime

import (
	"fmt"
	"os/exec"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The lab maps images to programs instead of pulling them. A mapping is one of:
// the local amime binary, one of amime's built-in workloads (wire-compatible
// stand-ins for agnhost, nginxdemos/hello and nginx), or a command run on the host
// for general-purpose tool images whose command is the point (busybox, netshoot).

// ErrImageNotMapped is the waiting reason of a container whose image the lab cannot run.
const ErrImageNotMapped = "ErrImagePull"

// imageRef splits an image reference into its repository (registry host and the
// implicit "library/" removed) and tag.
func imageRef(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	tag = "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image, tag = image[:i], image[i+1:]
	}
	parts := strings.Split(image, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		parts = parts[1:]
	}
	if len(parts) == 2 && parts[0] == "library" {
		parts = parts[1:]
	}
	return strings.Join(parts, "/"), tag
}

// hostToolImages run the container's command on the host; the value is the
// image's default command when the pod gives none (its ENTRYPOINT + CMD).
// Except for the images in toolEntrypoints, these images have no ENTRYPOINT:
// args given without a command replace the default (kubectl run --image=busybox
// -- sleep 3600 runs "sleep 3600").
var hostToolImages = map[string][]string{
	"busybox":                                    {"sh"},
	"alpine":                                     {"sh"},
	"debian":                                     {"bash"},
	"ubuntu":                                     {"bash"},
	"nicolaka/netshoot":                          {"zsh"},
	"curlimages/curl":                            {"curl"},
	"praqma/network-multitool":                   {"sh"},
	"wbitt/network-multitool":                    {"sh"},
	"infoblox/dnstools":                          {"sh"},
	"tutum/dnsutils":                             {"sh"},
	"e2e-test-images/busybox":                    {"sh"},
	"e2e-test-images/jessie-dnsutils":            {"sh"},
	"kubernetes-e2e-test-images/dnsutils":        {"sh"},
	"google-containers/busybox":                  {"sh"},
	"e2e-test-images/httpd":                      nil,
	"e2e-test-images/nonewprivs":                 nil,
	"e2e-test-images/volume/nfs":                 nil,
	"kubernetes-e2e-test-images/jessie-dnsutils": {"sh"},
}

// toolEntrypoints are the host tool images whose ENTRYPOINT runs the default
// command with the pod's args (curlimages/curl: args [-s, URL] run curl -s URL).
var toolEntrypoints = map[string]bool{"curlimages/curl": true}

// builtinImages map to a built-in workload (`amime workload NAME`).
func builtinWorkload(repo, tag string) (string, bool) {
	switch repo {
	case "e2e-test-images/agnhost", "kubernetes-e2e-test-images/agnhost":
		return "agnhost", true
	case "pause", "google_containers/pause", "google-containers/pause":
		return "pause", true
	case "nginxdemos/hello", "nginxdemos/nginx-hello":
		if strings.Contains(tag, "plain-text") {
			return "hello-plain", true
		}
		return "hello", true
	case "nginx", "nginxinc/nginx-unprivileged", "bitnami/nginx":
		return "nginx", true
	case "nginx/nginx-prometheus-exporter", "nginxinc/nginx-prometheus-exporter":
		return "nginx-exporter", true
	}
	return "", false
}

// isAmimeImage reports whether the image is amime's own (any registry, any tag).
func isAmimeImage(repo string) bool {
	return repo == "amime" || path.Base(repo) == "amime"
}

// lookPath finds a program on the host; tests replace it.
type lookPathFunc func(string) (string, error)

// containerArgv returns the program and arguments the lab runs for a container,
// or a clear reason why it cannot run it. amimeBin runs the amime image, podBin
// the built-in workloads.
func containerArgv(c *corev1.Container, amimeBin, podBin string, look lookPathFunc) ([]string, error) {
	if look == nil {
		look = exec.LookPath
	}
	repo, tag := imageRef(c.Image)
	switch {
	case isAmimeImage(repo):
		// The image's entrypoint is the amime binary itself.
		cmd := c.Command
		if len(cmd) > 0 && path.Base(cmd[0]) == "amime" {
			cmd = cmd[1:]
		} else if len(cmd) > 0 {
			return hostCommand(append(append([]string{}, cmd...), c.Args...), c.Image, look)
		}
		return append(append([]string{amimeBin}, cmd...), c.Args...), nil
	}
	if w, ok := builtinWorkload(repo, tag); ok {
		if w == "agnhost" {
			// agnhost's entrypoint is /agnhost; pods give either the full command
			// (command: [/agnhost, netexec, ...]) or only the subcommand as args.
			cmd := c.Command
			if len(cmd) > 0 && path.Base(cmd[0]) != "agnhost" {
				// A shell or other tool inside the agnhost image: run it on the host.
				return hostCommand(append(append([]string{}, cmd...), c.Args...), c.Image, look)
			}
			if len(cmd) > 0 {
				cmd = cmd[1:]
			}
			rest := append(append([]string{}, cmd...), c.Args...)
			if len(rest) == 0 {
				// agnhost without a subcommand prints its help and exits.
				rest = []string{"--help"}
			}
			return append([]string{podBin, "workload", "agnhost"}, rest...), nil
		}
		if len(c.Command) > 0 {
			return nil, fmt.Errorf("image %q is mapped to amime's built-in %s server, which cannot run the custom command %q", c.Image, w, strings.Join(c.Command, " "))
		}
		return append([]string{podBin, "workload", w}, c.Args...), nil
	}
	def, ok := hostToolImages[repo]
	if !ok {
		return nil, fmt.Errorf("image %q is not mapped in the amime lab (images are mapped to local programs, not pulled); mapped images: amime, agnhost, pause, nginx, nginxdemos/hello, and tool images such as busybox, alpine, nicolaka/netshoot, curlimages/curl that run their command on the host", c.Image)
	}
	argv := append(append([]string{}, c.Command...), c.Args...)
	if len(c.Command) == 0 && (len(c.Args) == 0 || toolEntrypoints[repo]) {
		if def == nil {
			return nil, fmt.Errorf("image %q has no command the lab can run on the host: give the container a command", c.Image)
		}
		argv = append(append([]string{}, def...), c.Args...)
	}
	return hostCommand(argv, c.Image, look)
}

func hostCommand(argv []string, image string, look lookPathFunc) ([]string, error) {
	p, err := look(argv[0])
	if err != nil {
		return nil, fmt.Errorf("image %q runs its command on the host, but %q is not installed here: %v", image, argv[0], err)
	}
	return append([]string{p}, argv[1:]...), nil
}
