// Package tour is `amime lab tour`: the guided first ten minutes of Kubernetes
// networking. Each step prints the command a user would type against a real
// cluster and its real output, says in one sentence what Kubernetes did and
// which amime component did it, and records what it found in Results, so that
// a test can assert on the same run a newcomer sees.
package tour

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Runner runs the tour against one cluster.
type Runner struct {
	Kubectl     string // path of kubectl
	Kubeconfig  string
	Amime       string // path of the amime binary (for `amime lab exec --external`)
	LabName     string // shown in commands when it is not the default
	ExamplesDir string // examples/tour
	Out         io.Writer
	// Pause, when set, is called between steps (the interactive tour waits for Enter).
	Pause func()
	// CommandTimeout bounds every command the tour runs.
	CommandTimeout time.Duration
}

// step is one stage of the tour.
type step struct {
	title string
	run   func(ctx context.Context, r *Runner, res *Results) error
}

// Run runs every step. A failed check does not stop the tour (the rest still
// teaches something); Run returns an error naming every failed check.
func (r *Runner) Run(ctx context.Context) (*Results, error) {
	if r.CommandTimeout == 0 {
		r.CommandTimeout = 2 * time.Minute
	}
	if _, err := os.Stat(r.ExamplesDir); err != nil {
		return nil, fmt.Errorf("tour manifests: %w (run the tour from the amime checkout, or pass --examples)", err)
	}
	res := &Results{ServerAddresses: map[string]int{}, NodePortStatus: map[string]string{}}
	fmt.Fprintf(r.Out, "The tour runs real commands against the lab. To type them yourself:\n\n  export KUBECONFIG=%s\n", r.Kubeconfig)
	for i, s := range steps() {
		fmt.Fprintf(r.Out, "\n\033[1m== %d. %s\033[0m\n", i+1, s.title)
		if err := s.run(ctx, r, res); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.fail("%s: %v", s.title, err)
		}
		if r.Pause != nil {
			r.Pause()
		}
	}
	if len(res.Failures) > 0 {
		return res, fmt.Errorf("%d check(s) of the tour failed: %s", len(res.Failures), strings.Join(res.Failures, "; "))
	}
	return res, nil
}

// say prints the one-sentence explanation of a step.
func (r *Runner) say(format string, args ...any) {
	fmt.Fprintf(r.Out, "%s\n", fmt.Sprintf(format, args...))
}

// show prints the command as a user would type it, runs it, prints its real
// output and returns it.
func (r *Runner) show(ctx context.Context, argv ...string) (string, error) {
	fmt.Fprintf(r.Out, "\n$ %s\n", display(argv))
	out, err := r.exec(ctx, argv...)
	r.Out.Write([]byte(out))
	if out != "" && !strings.HasSuffix(out, "\n") {
		fmt.Fprintln(r.Out)
	}
	return out, err
}

// quiet runs a command without showing it (waits, lookups).
func (r *Runner) quiet(ctx context.Context, argv ...string) (string, error) {
	return r.exec(ctx, argv...)
}

func (r *Runner) exec(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.CommandTimeout)
	defer cancel()
	bin := argv[0]
	switch bin {
	case "kubectl":
		bin = r.Kubectl
	case "amime":
		bin = r.Amime
	}
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.Kubeconfig)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%s exited with %d", display(argv), ee.ExitCode())
		} else {
			err = fmt.Errorf("%s: %w", display(argv), err)
		}
	}
	return buf.String(), err
}

// labExec is `amime lab exec` with the lab's name when it is not the default.
func (r *Runner) labExec(args ...string) []string {
	argv := []string{"amime", "lab", "exec"}
	if r.LabName != "" && r.LabName != "lab" {
		argv = append(argv, "--name", r.LabName)
	}
	return append(argv, args...)
}

func (r *Runner) manifest(name string) string { return filepath.Join(r.ExamplesDir, name) }

// display quotes arguments that a shell would split.
func display(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$|;&<>()*?[]{}\\") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// eventually retries fn every half second until it succeeds or timeout passes.
func eventually(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
