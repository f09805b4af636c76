package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

func TestWriteKubeconfig(t *testing.T) {
	dir := t.TempDir()
	p, err := loadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ensure(certSpec{name: "admin", cn: "amime-lab-admin", orgs: []string{"system:masters"}, client: true}); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.IPFamily = FamilyIPv6
	server := c.APIServerURL()
	if server != "https://[fd00:a:e::1]:6443" {
		t.Fatalf("APIServerURL() = %q", server)
	}
	path := filepath.Join(dir, "out", "admin.kubeconfig")
	if err := p.writeKubeconfig(path, server, "admin"); err != nil {
		t.Fatal(err)
	}
	if got := fileMode(t, path); got != 0o600 {
		t.Errorf("kubeconfig mode = %v, want 0600", got)
	}

	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	if cfg.CurrentContext != "amime-lab" {
		t.Errorf("current context = %q, want amime-lab", cfg.CurrentContext)
	}
	ctx := cfg.Contexts["amime-lab"]
	if ctx == nil || ctx.Cluster != "amime-lab" || ctx.AuthInfo != "admin" || ctx.Namespace != "default" {
		t.Fatalf("context = %+v", ctx)
	}
	cluster := cfg.Clusters["amime-lab"]
	if cluster == nil || cluster.Server != server {
		t.Fatalf("cluster = %+v, want server %s", cluster, server)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(p.path(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(cluster.CertificateAuthorityData, read("ca.crt")) {
		t.Error("CA data is not ca.crt")
	}
	user := cfg.AuthInfos["admin"]
	if user == nil || !bytes.Equal(user.ClientCertificateData, read("admin.crt")) || !bytes.Equal(user.ClientKeyData, read("admin.key")) {
		t.Error("client certificate or key data do not match the files")
	}

	// The client configuration built from it names the server and embeds the credentials.
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != server {
		t.Errorf("rest config host = %q, want %q", rc.Host, server)
	}
	if len(rc.TLSClientConfig.CAData) == 0 || len(rc.TLSClientConfig.CertData) == 0 || len(rc.TLSClientConfig.KeyData) == 0 {
		t.Error("rest config lacks embedded TLS data")
	}
}

func TestWriteKubeconfigMissingCert(t *testing.T) {
	p, err := loadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := p.writeKubeconfig(path, "https://172.30.0.1:6443", "nobody"); err == nil {
		t.Fatal("writeKubeconfig for a certificate that does not exist succeeded")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("kubeconfig written despite the error: %v", err)
	}
}
