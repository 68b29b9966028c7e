package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TLSConfig is a throwaway PKI generated for one test: a CA, a server
// certificate for 127.0.0.1, ::1 and localhost, and a client certificate, all
// signed by the CA and written as PEM files. Pass it in Options.TLS (or
// SentinelOptions.TLS) to start servers that listen on TLS only.
//
// With the docker backend the server certificate also names a block of
// tlsAddrs addresses of the harness network, reserved for the servers
// started with this TLSConfig, so that clients verify a container by the
// address they dial.
type TLSConfig struct {
	Dir            string // where the files are
	CAFile         string // CA certificate (tls-ca-cert-file)
	CertFile       string // server certificate (tls-cert-file)
	KeyFile        string // server key (tls-key-file)
	ClientCertFile string // client certificate, for servers that require one
	ClientKeyFile  string // client key

	// AuthClients, when true, starts servers with --tls-auth-clients yes, so
	// that clients must present a certificate signed by the CA. Default: no.
	AuthClients bool

	caPool     *x509.CertPool
	clientCert tls.Certificate

	mu    sync.Mutex // protects addrs
	addrs []net.IP   // docker backend: addresses named by the certificate, not yet handed out
}

// tlsAddrs is how many addresses of the harness network a TLSConfig
// reserves with the docker backend: a Sentinel group of a master, two
// replicas and three Sentinels needs six.
const tlsAddrs = 16

// NewTLSConfig generates a CA, a server and a client certificate into a
// fresh temp dir. It fails the test on error.
func NewTLSConfig(t testing.TB) *TLSConfig {
	t.Helper()
	var addrs []net.IP
	if SelectedBackend() == BackendDocker {
		b, err := newDockerBackend()
		if err != nil {
			t.Fatal(err)
		}
		if addrs, err = b.reserve(tlsAddrs); err != nil {
			t.Fatal(err)
		}
	}
	c, err := generateTLS(tempDir(t, ""), addrs)
	if err != nil {
		t.Fatalf("harness: generate TLS certificates: %v", err)
	}
	return c
}

// ClientConfig returns a client configuration that trusts the CA and offers
// the client certificate. Each call returns a new *tls.Config.
func (c *TLSConfig) ClientConfig() *tls.Config {
	return &tls.Config{
		RootCAs:      c.caPool,
		Certificates: []tls.Certificate{c.clientCert},
		MinVersion:   tls.VersionTLS12,
	}
}

// CAPool returns the pool holding the harness CA.
func (c *TLSConfig) CAPool() *x509.CertPool { return c.caPool }

// serverArgs returns the TLS arguments of redis-server (besides the port).
// Replication runs over TLS too, so replicas and Sentinels can reach a
// TLS-only master.
func (c *TLSConfig) serverArgs(path func(string) string) []string {
	auth := "no"
	if c.AuthClients {
		auth = "yes"
	}
	return []string{
		"--tls-cert-file", path(c.CertFile),
		"--tls-key-file", path(c.KeyFile),
		"--tls-ca-cert-file", path(c.CAFile),
		"--tls-auth-clients", auth,
		"--tls-replication", "yes",
	}
}

// takeAddr hands out one of the addresses the certificate names.
func (c *TLSConfig) takeAddr() (net.IP, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs) == 0 {
		return nil, fmt.Errorf("harness: this TLSConfig names no more addresses of the harness network (it has %d, made under %s=%s); call NewTLSConfig again", tlsAddrs, BackendEnv, BackendDocker)
	}
	ip := c.addrs[0]
	c.addrs = c.addrs[1:]
	return ip, nil
}

func generateTLS(dir string, addrs []net.IP) (*TLSConfig, error) {
	c := &TLSConfig{
		addrs:          addrs,
		Dir:            dir,
		CAFile:         filepath.Join(dir, "ca.crt"),
		CertFile:       filepath.Join(dir, "server.crt"),
		KeyFile:        filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redlock test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	c.caPool = x509.NewCertPool()
	c.caPool.AddCert(caCert)

	issue := func(serial int64, cn string, usage []x509.ExtKeyUsage, certFile, keyFile string) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  usage,
			DNSNames:     []string{"localhost"},
			IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, addrs...),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return tls.Certificate{}, err
		}
		// Readable by all: the key is throwaway, and the redis user of a
		// Docker container must be able to read it through a bind mount.
		if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o644); err != nil {
			return tls.Certificate{}, err
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	// The server certificate is also the client certificate a replica or a
	// Sentinel presents to a master, hence ClientAuth.
	if _, err := issue(2, "localhost", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, c.CertFile, c.KeyFile); err != nil {
		return nil, err
	}
	if c.clientCert, err = issue(3, "redlock test client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, c.ClientCertFile, c.ClientKeyFile); err != nil {
		return nil, err
	}
	return c, nil
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
