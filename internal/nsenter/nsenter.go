// Package nsenter runs commands inside the namespaces of a running process, the
// way `kubectl exec` enters a container: its network, mount and UTS namespaces,
// its working directory and its environment.
package nsenter

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Command prepares argv to run in the namespaces of process pid. It uses
// util-linux nsenter, which switches namespaces before exec in a single-threaded
// process (a Go program cannot join a mount namespace once it runs threads).
func Command(ctx context.Context, pid int, argv []string) *exec.Cmd {
	p := strconv.Itoa(pid)
	wd := "/"
	if dir, err := os.Readlink("/proc/" + p + "/cwd"); err == nil {
		wd = dir
	}
	args := append([]string{"--target", p, "--net", "--mount", "--uts", "--wdns=" + wd, "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = Environ(pid)
	return cmd
}

// Environ returns the environment of process pid (empty if unreadable).
func Environ(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return []string{}
	}
	var env []string
	for _, kv := range strings.Split(string(b), "\x00") {
		if kv != "" {
			env = append(env, kv)
		}
	}
	return env
}
