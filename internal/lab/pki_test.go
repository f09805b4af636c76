package lab

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: not a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab", "pki") // created on demand
	p1, err := loadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !p1.caCert.IsCA || !p1.caCert.BasicConstraintsValid || p1.caCert.Subject.CommonName != "amime-lab-ca" {
		t.Errorf("CA certificate: IsCA=%v basicConstraints=%v CN=%q", p1.caCert.IsCA, p1.caCert.BasicConstraintsValid, p1.caCert.Subject.CommonName)
	}
	if p1.caCert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if err := p1.caCert.CheckSignatureFrom(p1.caCert); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if got := fileMode(t, filepath.Join(dir, "ca.key")); got != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", got)
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("pki dir mode = %v, want 0700", got)
	}
	onDisk := readCert(t, filepath.Join(dir, "ca.crt"))
	if !onDisk.Equal(p1.caCert) {
		t.Error("ca.crt differs from the returned CA")
	}

	// A second call reuses the CA.
	p2, err := loadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !p2.caCert.Equal(p1.caCert) || p2.caCert.SerialNumber.Cmp(p1.caCert.SerialNumber) != 0 {
		t.Error("second loadOrCreateCA created a new CA")
	}
	k1, ok1 := p1.caKey.Public().(*ecdsa.PublicKey)
	k2, ok2 := p2.caKey.Public().(*ecdsa.PublicKey)
	if !ok1 || !ok2 || !k1.Equal(k2) {
		t.Error("second loadOrCreateCA has a different key")
	}

	// Another directory gets another CA.
	p3, err := loadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if p3.caCert.Equal(p1.caCert) {
		t.Error("two labs share a CA")
	}
}

func TestLoadOrCreateCACorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A corrupt CA is an error, never silently replaced (that would invalidate
	// every kubeconfig handed out).
	if _, err := loadOrCreateCA(dir); err == nil {
		t.Fatal("loadOrCreateCA with a corrupt CA succeeded")
	}
	b, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if string(b) != "garbage" {
		t.Error("corrupt CA was overwritten")
	}
}

func TestEnsure(t *testing.T) {
	p, err := loadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec := certSpec{
		name:   "apiserver",
		cn:     "kube-apiserver",
		orgs:   []string{"amime"},
		dns:    []string{"localhost", "kubernetes", "kubernetes.default.svc.cluster.local"},
		ips:    []net.IP{net.ParseIP("172.30.0.1"), net.ParseIP("10.96.0.1"), net.ParseIP("fd00:a:e::1")},
		server: true,
	}
	if err := p.ensure(spec); err != nil {
		t.Fatal(err)
	}
	crt := p.path("apiserver.crt")
	c1 := readCert(t, crt)
	if err := c1.CheckSignatureFrom(p.caCert); err != nil {
		t.Errorf("certificate not signed by the lab CA: %v", err)
	}
	if c1.Subject.CommonName != "kube-apiserver" {
		t.Errorf("CN = %q", c1.Subject.CommonName)
	}
	if diff := cmp.Diff([]string{"amime"}, c1.Subject.Organization); diff != "" {
		t.Errorf("organization (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(spec.dns, c1.DNSNames); diff != "" {
		t.Errorf("DNS SANs (-want +got):\n%s", diff)
	}
	var ips []string
	for _, ip := range c1.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"172.30.0.1", "10.96.0.1", "fd00:a:e::1"}, ips); diff != "" {
		t.Errorf("IP SANs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, c1.ExtKeyUsage); diff != "" {
		t.Errorf("ext key usage (-want +got):\n%s", diff)
	}
	if c1.IsCA {
		t.Error("leaf certificate is a CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	if _, err := c1.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("verify as a server for kubernetes: %v", err)
	}
	if got := fileMode(t, p.path("apiserver.key")); got != 0o600 {
		t.Errorf("key mode = %v, want 0600", got)
	}
	// The key matches the certificate.
	_, key, err := readPair(crt, p.path("apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(c1.PublicKey) {
		t.Error("key does not match the certificate")
	}

	// A valid certificate is not reissued.
	if err := p.ensure(spec); err != nil {
		t.Fatal(err)
	}
	c2 := readCert(t, crt)
	if c2.SerialNumber.Cmp(c1.SerialNumber) != 0 {
		t.Errorf("valid certificate reissued: serial %v → %v", c1.SerialNumber, c2.SerialNumber)
	}

	// Changed SANs or CN reissue it.
	changes := []struct {
		name   string
		mutate func(*certSpec)
	}{
		{"IP added", func(s *certSpec) { s.ips = append(append([]net.IP{}, s.ips...), net.ParseIP("172.30.0.2")) }},
		{"IP changed", func(s *certSpec) { s.ips = []net.IP{net.ParseIP("172.30.0.9"), s.ips[1], s.ips[2]} }},
		{"DNS name removed", func(s *certSpec) { s.dns = s.dns[:2] }},
		{"DNS name changed", func(s *certSpec) { s.dns = []string{"localhost", "kubernetes", "kubernetes.default.svc.lab.internal"} }},
		{"CN changed", func(s *certSpec) { s.cn = "kube-apiserver-2" }},
	}
	prev := c2
	for _, ch := range changes {
		s := spec
		ch.mutate(&s)
		if err := p.ensure(s); err != nil {
			t.Fatalf("%s: %v", ch.name, err)
		}
		c := readCert(t, crt)
		if c.SerialNumber.Cmp(prev.SerialNumber) == 0 {
			t.Errorf("%s: certificate not reissued", ch.name)
		}
		if c.Subject.CommonName != s.cn || len(c.DNSNames) != len(s.dns) || len(c.IPAddresses) != len(s.ips) {
			t.Errorf("%s: reissued certificate does not follow the spec: CN %q, %d DNS, %d IPs", ch.name, c.Subject.CommonName, len(c.DNSNames), len(c.IPAddresses))
		}
		prev = c
	}
}

func TestEnsureClientAndBothUsages(t *testing.T) {
	p, err := loadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec certSpec
		want []x509.ExtKeyUsage
	}{
		{certSpec{name: "admin", cn: "amime-lab-admin", orgs: []string{"system:masters"}, client: true}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{certSpec{name: "both", cn: "both", server: true, client: true, dns: []string{"both"}}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		if err := p.ensure(tt.spec); err != nil {
			t.Fatal(err)
		}
		c := readCert(t, p.path(tt.spec.name+".crt"))
		if diff := cmp.Diff(tt.want, c.ExtKeyUsage); diff != "" {
			t.Errorf("%s: ext key usage (-want +got):\n%s", tt.spec.name, diff)
		}
		if diff := cmp.Diff(tt.spec.orgs, c.Subject.Organization); diff != "" {
			t.Errorf("%s: organization (-want +got):\n%s", tt.spec.name, diff)
		}
		if len(c.DNSNames) != len(tt.spec.dns) || len(c.IPAddresses) != 0 {
			t.Errorf("%s: SANs %v %v", tt.spec.name, c.DNSNames, c.IPAddresses)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	admin := readCert(t, p.path("admin.crt"))
	if _, err := admin.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate does not verify as a client: %v", err)
	}
}

func TestEnsureReissuesCertificateOfAnotherCA(t *testing.T) {
	dir := t.TempDir()
	other, err := loadOrCreateCA(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	spec := certSpec{name: "node", cn: "system:node:lab-node-1", orgs: []string{"system:nodes"}, client: true}
	if err := other.ensure(spec); err != nil {
		t.Fatal(err)
	}
	p, err := loadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".crt", ".key"} {
		b, err := os.ReadFile(other.path("node" + ext))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.path("node"+ext), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ensure(spec); err != nil {
		t.Fatal(err)
	}
	if err := readCert(t, p.path("node.crt")).CheckSignatureFrom(p.caCert); err != nil {
		t.Errorf("certificate of another CA kept: %v", err)
	}
}

func TestEnsureKey(t *testing.T) {
	p, err := loadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ensureKey("sa"); err != nil {
		t.Fatal(err)
	}
	key1, err := os.ReadFile(p.path("sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub1, err := os.ReadFile(p.path("sa.pub"))
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(key1)
	pb, _ := pem.Decode(pub1)
	if kb == nil || kb.Type != "PRIVATE KEY" || pb == nil || pb.Type != "PUBLIC KEY" {
		t.Fatalf("PEM types: key %v, pub %v", kb, pb)
	}
	priv, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.(*ecdsa.PrivateKey).PublicKey.Equal(pub) {
		t.Error("sa.pub is not the public half of sa.key")
	}
	if got := fileMode(t, p.path("sa.key")); got != 0o600 {
		t.Errorf("sa.key mode = %v, want 0600", got)
	}
	if got := fileMode(t, p.path("sa.pub")); got != 0o644 {
		t.Errorf("sa.pub mode = %v, want 0644", got)
	}

	// Idempotent: the second call keeps the key.
	if err := p.ensureKey("sa"); err != nil {
		t.Fatal(err)
	}
	key2, _ := os.ReadFile(p.path("sa.key"))
	pub2, _ := os.ReadFile(p.path("sa.pub"))
	if !bytes.Equal(key1, key2) || !bytes.Equal(pub1, pub2) {
		t.Error("ensureKey replaced an existing key")
	}

	// A missing public half regenerates the pair.
	if err := os.Remove(p.path("sa.pub")); err != nil {
		t.Fatal(err)
	}
	if err := p.ensureKey("sa"); err != nil {
		t.Fatal(err)
	}
	key3, _ := os.ReadFile(p.path("sa.key"))
	pub3, err := os.ReadFile(p.path("sa.pub"))
	if err != nil {
		t.Fatalf("sa.pub not recreated: %v", err)
	}
	if bytes.Equal(key1, key3) {
		t.Error("key pair not regenerated when sa.pub was missing")
	}
	kb3, _ := pem.Decode(key3)
	pb3, _ := pem.Decode(pub3)
	priv3, _ := x509.ParsePKCS8PrivateKey(kb3.Bytes)
	pubKey3, _ := x509.ParsePKIXPublicKey(pb3.Bytes)
	if !priv3.(*ecdsa.PrivateKey).PublicKey.Equal(pubKey3) {
		t.Error("regenerated pair does not match")
	}
}

func TestSameSANs(t *testing.T) {
	cert := &x509.Certificate{
		DNSNames:    []string{"a", "b"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("fd00::1")},
	}
	cert.Subject.CommonName = "cn"
	base := certSpec{cn: "cn", dns: []string{"a", "b"}, ips: []net.IP{net.ParseIP("10.0.0.1").To4(), net.ParseIP("fd00::1")}}
	tests := []struct {
		name string
		spec certSpec
		want bool
	}{
		{"same (4-byte and 16-byte forms of an IPv4 address are equal)", base, true},
		{"different CN", certSpec{cn: "x", dns: base.dns, ips: base.ips}, false},
		{"DNS order matters", certSpec{cn: "cn", dns: []string{"b", "a"}, ips: base.ips}, false},
		{"missing IP", certSpec{cn: "cn", dns: base.dns, ips: base.ips[:1]}, false},
		{"other IP", certSpec{cn: "cn", dns: base.dns, ips: []net.IP{net.ParseIP("10.0.0.2"), net.ParseIP("fd00::1")}}, false},
		{"extra DNS", certSpec{cn: "cn", dns: []string{"a", "b", "c"}, ips: base.ips}, false},
		// Organizations and usages are not compared.
		{"orgs ignored", certSpec{cn: "cn", dns: base.dns, ips: base.ips, orgs: []string{"o"}, client: true}, true},
	}
	for _, tt := range tests {
		if got := sameSANs(cert, tt.spec); got != tt.want {
			t.Errorf("%s: sameSANs = %v, want %v", tt.name, got, tt.want)
		}
	}
}
