package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/status"
)

func newStatusCommand() *cobra.Command {
	var cf clusterFlags
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show amime's state on every node (agent, routing, Services, policies) and cluster DNS",
		Long: `status asks every node's amime agent for its /status through the apiserver's
pod proxy and reports, per node, whether the agent is ready, the routing mode,
how many routes, Services, endpoints and policies it has programmed, when it
last synced and its last error; then the cluster DNS replicas behind kube-dns.
It works against the lab and against any cluster a kubeconfig reaches.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "text" {
				return fmt.Errorf("-o %q: want text or json", output)
			}
			cs, rc, err := cf.client("amime-status")
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			r, err := status.Collect(ctx, cs, rc.Host)
			if err != nil {
				return fmt.Errorf("%w (is the cluster up? `amime lab status` tells for the lab)", err)
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return status.Print(os.Stdout, r, time.Now())
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
