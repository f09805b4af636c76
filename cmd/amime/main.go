// Command amime is the one binary of the amime networking stack. Each subcommand
// wires a package from internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"amime.dev/amime/internal/cni"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	// A container runtime runs the CNI plugin as this binary with no arguments and
	// CNI_COMMAND in the environment.
	if os.Getenv("CNI_COMMAND") != "" && len(os.Args) == 1 {
		os.Exit(cni.Main(cniAbout()))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// exitError carries a specific exit code (for example the one of a command run
// by `lab exec`) up to main without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// newRootCommand builds the whole command tree (also read by `amime docs`).
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "amime",
		Short:         "amime: Kubernetes cluster networking (CNI, Service proxy, DNS, policy, gateway, LoadBalancer IPs) and its lab",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newDocsCommand(), newAgentCommand(), newCNICommand(), newLabCommand(), newWorkloadCommand(), newShimCommand(), newStatusCommand(), newDNSCommand(), newPolicyCommand())
	return root
}

func run(ctx context.Context, args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(os.Stderr, "amime:", err)
		return 1
	}
}

func newLogger(debug bool) *slog.Logger {
	lvl := slog.LevelInfo
	if debug {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}
