package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// pki holds the files the control plane is configured with; all live under DIR/pki.
type pki struct {
	servingCert, servingKey string // apiserver serving cert (SANs 127.0.0.1, localhost) and key
	caCert                  string // CA that signed the serving cert: kubeconfig CA data, kcm --root-ca-file
	saKey                   string // RSA key that signs (private) and verifies (public) service-account tokens
	tokenFile               string // --token-auth-file with the admin token
	token                   string
}

// pkiPaths are where the credentials of DIR live.
func pkiPaths(dir string) *pki {
	pdir := filepath.Join(dir, "pki")
	return &pki{
		servingCert: filepath.Join(pdir, "apiserver.crt"),
		servingKey:  filepath.Join(pdir, "apiserver.key"),
		caCert:      filepath.Join(pdir, "ca.crt"),
		saKey:       filepath.Join(pdir, "sa.key"),
		tokenFile:   filepath.Join(dir, "token.csv"),
	}
}

// loadPKI reuses the credentials of an earlier run of DIR (for --keep-data): the same CA,
// serving certificate, service-account signing key and admin token, so that clients which
// survive a restart of the control plane (kubeconfigs, ServiceAccount tokens, processes with
// open connections) reconnect. Nil when any file is missing.
func loadPKI(dir string) *pki {
	p := pkiPaths(dir)
	for _, f := range []string{p.servingCert, p.servingKey, p.caCert, p.saKey} {
		if _, err := os.Stat(f); err != nil {
			return nil
		}
	}
	csv, err := os.ReadFile(p.tokenFile)
	if err != nil {
		return nil
	}
	token, _, found := strings.Cut(string(csv), ",")
	if !found || token == "" {
		return nil
	}
	p.token = token
	return p
}

// writePKI generates fresh credentials for DIR.
func writePKI(dir string) (*pki, error) {
	pdir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	p := pkiPaths(dir)

	// GenerateSelfSignedCertKey returns the leaf followed by the CA that signed it. The leaf has
	// IP SAN 127.0.0.1 and DNS SAN localhost, which is what clients dialing 127.0.0.1 verify.
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		return nil, fmt.Errorf("generate serving cert: %w", err)
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil || len(certs) < 2 {
		return nil, fmt.Errorf("parse generated serving cert: %v (%d certs)", err, len(certs))
	}
	caPEM, err := certutil.EncodeCertificates(certs[len(certs)-1])
	if err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})

	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p.token = hex.EncodeToString(tok)
	// token,user,uid,"groups": system:masters is bound to cluster-admin by the default RBAC policy.
	tokenCSV := fmt.Sprintf("%s,admin,admin,\"system:masters\"\n", p.token)

	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.servingCert, certPEM}, {p.servingKey, keyPEM}, {p.caCert, caPEM},
		{p.saKey, saPEM}, {p.tokenFile, []byte(tokenCSV)},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeKubeconfig writes an admin kubeconfig that verifies the serving cert with the real CA
// and authenticates with the static bearer token.
func writeKubeconfig(path, server string, p *pki) error {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: p.token}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "testenv"
	return clientcmd.WriteToFile(*cfg, path)
}

// apiserverArgs are the kube-apiserver flags. withKCM decides whether admission plugins that rely
// on controllers stay enabled; withNode turns on aggregator routing; extra (audit) is appended.
func apiserverArgs(etcdURL string, port int, p *pki, withKCM, withNode bool, extra []string) []string {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--token-auth-file=" + p.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saKey,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// The default "lease" reconciler would publish 127.0.0.1 as the endpoint of the
		// `kubernetes` Service, which Endpoints validation rejects (loopback); no one needs it here.
		"--endpoint-reconciler-type=none",
		// Shutdown otherwise waits up to --request-timeout (60s) for open watches (tests' and
		// controllers' clients) and then reports failure; this mode drains the non-watch requests,
		// then gives the HTTP server 2s.
		"--shutdown-send-retry-after=true",
		"--profiling=false",
		"-v=0",
	}
	if !withKCM {
		// Without the serviceaccount controller no namespace gets a "default" ServiceAccount, and the
		// ServiceAccount admission plugin would then reject every Pod. Mutating/validating webhook
		// admission (and all other defaults) stay on: the project's webhooks are tested against it.
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	if withNode {
		// There is no kube-proxy, so a Service's ClusterIP leads nowhere: call admission webhooks
		// (and aggregated APIs) behind a Service at one of its endpoints (EndpointSlices) instead.
		args = append(args, "--enable-aggregator-routing=true")
	}
	return append(args, extra...)
}

// newAPIServerCommand returns the upstream kube-apiserver command. Creating it installs the
// process's SIGTERM/SIGINT handler (genericapiserver.SetupSignalContext), which would stop the
// apiserver at the first signal and exit the process at the second. testenv must keep the
// apiserver running while it tears a node down (pods are deleted through it), so it takes both
// signals back: the apiserver is stopped by stopAPIServer (genericapiserver.RequestShutdown)
// when testenv decides. The caller must call signal.Notify for its own channel afterwards.
func newAPIServerCommand() *cobra.Command {
	command := app.NewAPIServerCommand()
	signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	return command
}

// runAPIServer runs kube-apiserver in this process until stopAPIServer is called. It returns
// when the server has shut down, or early with an error if it cannot start.
func runAPIServer(command *cobra.Command, args []string) error {
	command.SetArgs(args)
	return cli.RunNoErrOutput(command)
}
