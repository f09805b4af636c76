package main

import (
	"os"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/workload"
)

func newWorkloadCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "workload NAME [ARGS...]",
		Short:              "Run a built-in workload (the lab's stand-ins for agnhost, nginxdemos/hello, nginx)",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := workload.Main(args, os.Stdout, os.Stderr); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
}
