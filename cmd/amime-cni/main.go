// Command amime-cni is the amime CNI plugin on its own: the binary a container
// runtime executes for every ADD, DEL, CHECK, GC, STATUS and VERSION. The agent
// installs it as <cni-bin-dir>/amime. It links the plugin and nothing else (no
// Kubernetes client, no cobra), so a call starts in about 4 ms instead of the
// 15 ms that the full amime binary spends loading and initialising its packages;
// a node that starts many pods at once execs it hundreds of times.
package main

import (
	"fmt"
	"os"

	"amime.dev/amime/internal/cni"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const help = `amime-cni is the amime CNI plugin (CNI specification 1.1). A container
runtime runs it with CNI_COMMAND and the other CNI_* variables in the
environment and the network configuration on standard input; see
docs/networking.md. The same plugin is also "amime cni".

usage: amime-cni [--help | --version]
`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-h", "--help", "help":
			fmt.Print(help)
			os.Exit(0)
		case "--version", "version":
			fmt.Println(about())
			os.Exit(0)
		default:
			fmt.Fprintf(os.Stderr, "amime-cni: unknown argument %q\n%s", os.Args[1], help)
			os.Exit(2)
		}
	}
	os.Exit(cni.Main(about()))
}

func about() string { return "amime CNI plugin " + version }
