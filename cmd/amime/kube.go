package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"amime.dev/amime/internal/lab"
)

// clusterFlags choose the cluster a command talks to: --kubeconfig, else
// $KUBECONFIG, else the running lab named by --lab, else ~/.kube/config.
type clusterFlags struct {
	kubeconfig string
	lab        string
}

func (c *clusterFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG, else the running lab's, else ~/.kube/config)")
	f.StringVar(&c.lab, "lab", lab.Defaults().Name, "the lab to use when no kubeconfig is given")
}

// path resolves which kubeconfig to use, or says in one line what to do.
func (c *clusterFlags) path() (string, error) {
	if c.kubeconfig != "" {
		return c.kubeconfig, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return env, nil
	}
	if cfg, err := lab.LoadConfig(lab.Defaults().StateRoot, c.lab); err == nil {
		l := &lab.Lab{Config: cfg}
		if _, err := os.Stat(l.KubeconfigPath()); err == nil {
			return l.KubeconfigPath(), nil
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".kube", "config")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no cluster to talk to: lab %q is not up and no kubeconfig was given (run `make lab`, or pass --kubeconfig)", c.lab)
}

// client returns a clientset and the REST config it was made from.
func (c *clusterFlags) client(userAgent string) (*kubernetes.Clientset, *rest.Config, error) {
	p, err := c.path()
	if err != nil {
		return nil, nil, err
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: p}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", p, err)
	}
	rc.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return cs, rc, nil
}
