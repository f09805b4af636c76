package lab

import (
	"amime.dev/amime/internal/atomicfile"

	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig for one identity with the certificates
// embedded, so the file can be copied elsewhere and still work.
func (p *pki) writeKubeconfig(path, server, certName string) error {
	ca, err := os.ReadFile(p.path("ca.crt"))
	if err != nil {
		return err
	}
	crt, err := os.ReadFile(p.path(certName + ".crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(p.path(certName + ".key"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["amime-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[certName] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["amime-lab"] = &clientcmdapi.Context{Cluster: "amime-lab", AuthInfo: certName, Namespace: "default"}
	cfg.CurrentContext = "amime-lab"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	return atomicfile.Write(path, b, 0o600)
}
