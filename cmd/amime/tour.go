package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"amime.dev/amime/internal/lab"
	"amime.dev/amime/internal/tour"
)

// newTourCommand is `amime lab tour`; existing loads the running lab.
func newTourCommand(existing func() (*lab.Lab, error)) *cobra.Command {
	var examples, results string
	var interactive bool
	cmd := &cobra.Command{
		Use:   "tour",
		Short: "The guided tour of Kubernetes networking on the lab: real commands, real output",
		Long: `tour applies the manifests of examples/tour/ to the lab and shows, step by
step, the command a user would type against a real cluster and its real output:
a Deployment and its Service, pod and node IPs, reaching the Service by name
from a pod, names across namespaces, scaling out, NodePort from outside the
cluster, and what amime programmed. It exits non-zero, naming each failed
check, when something does not work as Kubernetes says it should.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := existing()
			if err != nil {
				return err
			}
			kubectl, err := l.Kubectl()
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if examples == "" {
				examples = filepath.Clean(filepath.Join(filepath.Dir(self), "..", "examples", "tour"))
			}
			r := &tour.Runner{Kubectl: kubectl, Kubeconfig: l.KubeconfigPath(), Amime: self, LabName: l.Name,
				ExamplesDir: examples, Out: os.Stdout}
			if interactive {
				if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
					return fmt.Errorf("--interactive needs a terminal on standard input")
				}
				in := bufio.NewReader(os.Stdin)
				r.Pause = func() {
					fmt.Print("\n[Enter for the next step] ")
					_, _ = in.ReadString('\n')
				}
			}
			res, runErr := r.Run(cmd.Context())
			if results != "" && res != nil {
				b, _ := json.MarshalIndent(res, "", "  ")
				if err := os.WriteFile(results, append(b, '\n'), 0o644); err != nil {
					return fmt.Errorf("write --results: %w", err)
				}
			}
			return runErr
		},
	}
	cmd.Flags().StringVar(&examples, "examples", "", "directory of the tour's manifests (default: ../examples/tour next to the binary)")
	cmd.Flags().StringVar(&results, "results", "", "write what the tour observed, as JSON, to this file")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "wait for Enter between steps")
	return cmd
}
