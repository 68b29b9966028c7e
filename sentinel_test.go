package redlock

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
)

// TestSentinelSeedLinesParse checks the three Sentinel lines of the seed
// (aioredlock's README) field by field.
func TestSentinelSeedLinesParse(t *testing.T) {
	// Sentinel(('localhost', 26379), master='leader', db=3)
	s := Sentinel{Addrs: []string{"localhost:26379"}, Master: "leader", DB: 3}
	require.NoError(t, s.validate())
	require.Equal(t, "redis+sentinel://localhost:26379/3?master=leader", s.String())

	// Sentinel('redis://localhost:26379/4?master=leader&encoding=utf-8')
	s, err := parseSentinelURL("redis://localhost:26379/4?master=leader&encoding=utf-8")
	require.NoError(t, err)
	require.Equal(t, Sentinel{Addrs: []string{"localhost:26379"}, Master: "leader", DB: 4}, s)

	// Sentinel('rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE')
	s, err = parseSentinelURL("rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE")
	require.NoError(t, err)
	require.Equal(t, []string{"localhost:26379"}, s.Addrs)
	require.Equal(t, "leader", s.Master)
	require.Equal(t, 5, s.DB)
	require.Equal(t, "", s.Username)
	require.Equal(t, "password", s.Password, "the userinfo password is the master's")
	require.Equal(t, "", s.SentinelPassword)
	require.NotNil(t, s.TLS, "rediss must use TLS")
	require.True(t, s.TLS.InsecureSkipVerify, "CERT_NONE must skip verification")
	require.Empty(t, s.TLS.ServerName, "ServerName must be left to redigo (one per server)")

	// The same lines through the public constructors build nodes named
	// without the password.
	for _, inst := range []Instance{
		Sentinel{Addrs: []string{"localhost:26379"}, Master: "leader", DB: 3},
		SentinelURL("redis://localhost:26379/4?master=leader&encoding=utf-8"),
		SentinelURL("rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE"),
	} {
		n, err := inst.newNode()
		require.NoError(t, err, "%s", inst)
		require.NotContains(t, n.name, "password")
		require.NotNil(t, n.sentinel, "a Sentinel node must carry the failover hook")
		require.NoError(t, n.shutdown())
	}
}

func TestSentinelURLForms(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Sentinel
	}{
		{"redis+sentinel://h1:26379,h2:26380,h3/2?master=m", Sentinel{Addrs: []string{"h1:26379", "h2:26380", "h3:26379"}, Master: "m", DB: 2}},
		{"redis://h1,[::1]:26381,[::1]/0?master=m", Sentinel{Addrs: []string{"h1:26379", "[::1]:26381", "[::1]:26379"}, Master: "m"}},
		{"redis://h:1?master=m&db=7", Sentinel{Addrs: []string{"h:1"}, Master: "m", DB: 7}},
		{"redis://u:p%40ss@h:1/1?master=m%20x", Sentinel{Addrs: []string{"h:1"}, Master: "m x", DB: 1, Username: "u", Password: "p@ss"}},
		{"redis://h:1?master=m&password=pw&username=acl&sentinel_password=sp", Sentinel{Addrs: []string{"h:1"}, Master: "m", Username: "acl", Password: "pw", SentinelPassword: "sp"}},
		{"redis://h:1?master=m&min_replica_acks=2&replica_ack_timeout=250ms", Sentinel{Addrs: []string{"h:1"}, Master: "m", MinReplicaAcks: 2, ReplicaAckTimeout: 250 * time.Millisecond}},
	} {
		got, err := parseSentinelURL(tc.url)
		require.NoError(t, err, tc.url)
		require.Equal(t, tc.want, got, tc.url)
		inst, err := ParseInstance(strings.Replace(tc.url, "redis://", "redis+sentinel://", 1))
		require.NoError(t, err, tc.url)
		require.Equal(t, tc.want, inst, "ParseInstance(%s)", tc.url)
	}
}

func TestSentinelURLCertReqs(t *testing.T) {
	for reqs, skip := range map[string]bool{"": false, "CERT_REQUIRED": false, "CERT_OPTIONAL": false, "CERT_NONE": true, "none": true, "required": false} {
		s, err := parseSentinelURL("rediss+sentinel://h:1/0?master=m&ssl_cert_reqs=" + reqs)
		require.NoError(t, err, reqs)
		require.NotNil(t, s.TLS, reqs)
		require.Equal(t, skip, s.TLS.InsecureSkipVerify, "ssl_cert_reqs=%s", reqs)
		require.Nil(t, s.TLS.RootCAs, "without ssl_ca_certs the system roots are used")
	}
	s, err := parseSentinelURL("redis://h:1/0?master=m&ssl_cert_reqs=CERT_NONE")
	require.NoError(t, err)
	require.Nil(t, s.TLS, "redis:// is plain TCP whatever ssl_cert_reqs says")
	_, err = parseSentinelURL("rediss://h:1/0?master=m&ssl_cert_reqs=MAYBE")
	require.ErrorIs(t, err, ErrInvalidArgument)
}

// TestSentinelURLLoadsCAFile checks ssl_ca_certs (and the client
// certificate parameters): a server certificate signed by the file's CA
// verifies against the parsed RootCAs.
func TestSentinelURLLoadsCAFile(t *testing.T) {
	dir := t.TempDir()
	caFile, leaf, certFile, keyFile := sentinelTestPKI(t, dir)
	s, err := parseSentinelURL("rediss://h:1/0?master=m&ssl_ca_certs=" + caFile + "&ssl_certfile=" + certFile + "&ssl_keyfile=" + keyFile)
	require.NoError(t, err)
	require.NotNil(t, s.TLS.RootCAs)
	require.False(t, s.TLS.InsecureSkipVerify)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: s.TLS.RootCAs, DNSName: "localhost"})
	require.NoError(t, err, "a certificate signed by the ssl_ca_certs CA must verify")
	require.Len(t, s.TLS.Certificates, 1, "ssl_certfile/ssl_keyfile must give a client certificate")

	notPEM := filepath.Join(dir, "empty.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("nothing here"), 0o600))
	for _, bad := range []string{
		"rediss://h:1/0?master=m&ssl_ca_certs=" + filepath.Join(dir, "missing.pem"),
		"rediss://h:1/0?master=m&ssl_ca_certs=" + notPEM,
		"rediss://h:1/0?master=m&ssl_certfile=" + notPEM,
	} {
		_, err := parseSentinelURL(bad)
		require.ErrorIs(t, err, ErrInvalidArgument, bad)
		_, err = New([]Instance{SentinelURL(bad)})
		require.ErrorIs(t, err, ErrInvalidArgument, bad)
	}
}

func TestSentinelInvalidSpecs(t *testing.T) {
	for _, bad := range []string{
		"redis://h:26379/0",                    // no master
		"redis://h:26379/0?master=",            // empty master
		"redis+sentinel://h:26379/x?master=m",  // bad db
		"redis+sentinel://h:26379/-1?master=m", // negative db
		"redis://h:26379/0?master=m&db=no",     // bad db
		"redis://h:26379/0/1?master=m",         // bad path
		"redis://h:26379,,h2:1/0?master=m",     // empty host in the list
		"redis://h:0/0?master=m",               // port 0
		"redis:///0?master=m",                  // no host
		"sentinel://h:26379/0?master=m",        // unknown scheme
		"h:26379?master=m",                     // no scheme
		"redis://h:1?master=m&min_replica_acks=-1",
		"redis://h:1?master=m&min_replica_acks=x",
		"redis://h:1?master=m&replica_ack_timeout=0",
		"redis://h:1?master=m&replica_ack_timeout=100",
	} {
		_, err := parseSentinelURL(bad)
		require.ErrorIs(t, err, ErrInvalidArgument, bad)
		_, err = New([]Instance{SentinelURL(bad)})
		require.ErrorIs(t, err, ErrInvalidArgument, bad)
	}
	for name, bad := range map[string]Sentinel{
		"negative acks":        {Addrs: []string{"h:1"}, Master: "m", MinReplicaAcks: -1},
		"negative ack timeout": {Addrs: []string{"h:1"}, Master: "m", ReplicaAckTimeout: -time.Second},
		"negative dial":        {Addrs: []string{"h:1"}, Master: "m", DialTimeout: -time.Second},
	} {
		_, err := New([]Instance{bad})
		require.ErrorIs(t, err, ErrInvalidArgument, name)
	}
}

// TestSentinelNeverPrintsPasswords covers the master password (userinfo and
// ?password=) and the sentinel password, in String, node names and errors.
func TestSentinelNeverPrintsPasswords(t *testing.T) {
	const pw, spw = "m-secret", "s-secret"
	good := []Instance{
		SentinelURL("redis://:" + pw + "@h:26379/1?master=m&sentinel_password=" + spw),
		SentinelURL("redis://h:26379/1?master=m&password=" + pw + "&sentinel_password=" + spw),
		SentinelURL("redis://:" + pw + "@h1:26379,h2:26379/1?master=m&sentinel_password=" + spw),
		Sentinel{Addrs: []string{"h:26379"}, Master: "m", Password: pw, SentinelPassword: spw},
	}
	for _, inst := range good {
		for _, s := range []string{inst.String(), fmt.Sprint(inst), fmt.Sprintf("%v", inst)} {
			require.NotContains(t, s, pw)
			require.NotContains(t, s, spw)
		}
		m, err := New([]Instance{inst})
		require.NoError(t, err)
		require.NotContains(t, strings.Join(m.Nodes(), " "), pw)
		require.NotContains(t, strings.Join(m.Nodes(), " "), spw)
		require.NoError(t, m.Close())
	}
	for _, bad := range []string{
		"redis://:" + pw + "@h:26379/x?master=m&sentinel_password=" + spw,
		"redis://:" + pw + "@h:26379/1?sentinel_password=" + spw,
		"redis://h:26379/1?password=" + pw + "&sentinel_password=" + spw + "&db=z&master=m",
		"redis://:" + pw + "@h1:26379,h2:x/1?master=m&sentinel_password=" + spw,
		"redis://:" + pw + "@h:26379/1?master=m&sentinel_password=" + spw + "&ssl_cert_reqs=bad%zz",
	} {
		for _, err := range []error{
			func() error {
				_, err := ParseInstance(strings.Replace(bad, "redis://", "redis+sentinel://", 1))
				return err
			}(),
			func() error { _, err := New([]Instance{SentinelURL(bad)}); return err }(),
		} {
			require.ErrorIs(t, err, ErrInvalidArgument, bad)
			require.NotContains(t, err.Error(), pw, "error leaks the master password")
			require.NotContains(t, err.Error(), spw, "error leaks the sentinel password")
		}
		require.NotContains(t, SentinelURL(bad).String(), spw)
		require.NotContains(t, SentinelURL(bad).String(), pw)
	}
}

func TestMasterMovedClassification(t *testing.T) {
	moved := []error{
		redis.Error("READONLY You can't write against a read only replica."),
		redis.Error("READONLY You can't write against a read only replica. script: 82cd, on @user_script:1."),
		redis.Error("ERR Error running script (call to f_x): @user_script:1: -READONLY You can't write against a read only replica."),
		redis.Error("LOADING Redis is loading the dataset in memory"),
		redis.Error("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
		io.EOF,
		io.ErrUnexpectedEOF,
		&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)},
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)},
		fmt.Errorf("wrapped: %w", io.EOF),
	}
	for _, err := range moved {
		require.True(t, masterMoved(err), "%v must count as a moved master", err)
	}
	notMoved := []error{
		nil,
		redis.Error("NOSCRIPT No matching script."),
		redis.Error("WRONGPASS invalid username-password pair"),
		redis.Error("ERR unknown command"),
		context.DeadlineExceeded,
		context.Canceled,
		&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded},
		ErrLocked,
	}
	for _, err := range notMoved {
		require.False(t, masterMoved(err), "%v must not count as a moved master", err)
	}
}

// sentinelTestPKI writes a CA and a server certificate signed by it; it
// returns the CA file, the parsed leaf and the leaf's cert and key files.
func sentinelTestPKI(t *testing.T, dir string) (string, *x509.Certificate, string, string) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(leafDER)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), leaf, write("leaf.pem", "CERTIFICATE", leafDER), write("leaf.key", "PRIVATE KEY", keyDER)
}
