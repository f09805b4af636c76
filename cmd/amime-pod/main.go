// Command amime-pod is the small companion of amime that runs inside every lab
// pod: the container shim and the built-in workloads (agnhost, nginxdemos/hello,
// nginx, pause stand-ins). It uses only the standard library, so that a pod
// costs a few megabytes of memory instead of the full binary's footprint.
package main

import (
	"flag"
	"fmt"
	"os"

	"amime.dev/amime/internal/shim"
	"amime.dev/amime/internal/workload"
)

const usage = `usage:
  amime-pod shim --dir DIR          run one container (started by the lab's node runtime)
  amime-pod workload NAME [ARGS]    run a built-in workload: %v
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, usage, workload.Names())
		os.Exit(2)
	}
	switch os.Args[1] {
	case "shim":
		fs := flag.NewFlagSet("shim", flag.ContinueOnError)
		dir := fs.String("dir", "", "container state directory")
		if err := fs.Parse(os.Args[2:]); err != nil || *dir == "" {
			fmt.Fprintln(os.Stderr, "amime-pod shim: --dir is required")
			os.Exit(2)
		}
		os.Exit(shim.Run(*dir))
	case "workload":
		os.Exit(workload.Main(os.Args[2:], os.Stdout, os.Stderr))
	case "-h", "--help", "help":
		fmt.Fprintf(os.Stdout, usage, workload.Names())
	default:
		fmt.Fprintf(os.Stderr, "amime-pod: unknown command %q\n"+usage, os.Args[1], workload.Names())
		os.Exit(2)
	}
}
