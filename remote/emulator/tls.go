package emulator

// HTTPS for `evofs serve --tls`: a local certificate authority kept in a
// directory, and server certificates it issues on the fly for whatever name
// or address a client connects to. Clients trust the CA file (e.g. through
// SSL_CERT_FILE); the CA key never leaves the directory (mode 0600).

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA file names inside LocalCA's directory.
const (
	CACertFile = "ca.pem"     // public: what clients trust
	caKeyFile  = "ca-key.pem" // private: 0600
)

// LocalCA is a certificate authority created once in a directory and loaded
// from it afterwards, so a client that trusts its file keeps trusting every
// later run. Safe for concurrent use.
type LocalCA struct {
	CertFile string // path of the PEM certificate clients trust

	cert *x509.Certificate
	key  crypto.Signer

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by "name|ip"; GUARDED_BY(mu)
}

// OpenLocalCA loads the CA kept in dir, creating dir (0700) and the CA
// (certificate 0644, key 0600) if neither file exists yet.
func OpenLocalCA(dir string) (*LocalCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, caKeyFile)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	switch {
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
		if err := createCA(certPath, keyPath); err != nil {
			return nil, err
		}
	case cerr != nil || kerr != nil:
		return nil, fmt.Errorf("tls: %s needs both %s and %s (remove the one left to create a new CA): %v",
			dir, CACertFile, caKeyFile, errors.Join(cerr, kerr))
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls: load CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: load CA: %w", err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("tls: %s is not a CA certificate with a signing key", certPath)
	}
	return &LocalCA{CertFile: certPath, cert: cert, key: key, leaves: map[string]*tls.Certificate{}}, nil
}

func createCA(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"evofs"}, CommonName: "evofs serve local CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	// The key first: a certificate without its key would be useless.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeNew writes a file that must not exist yet, durably, with mode perm.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// TLSConfig is a server configuration presenting, to each client, a
// certificate for the name it asked for (SNI) and the local address it
// reached, plus localhost: so https://127.0.0.5, https://localhost and
// https://myhost all verify against the CA.
func (ca *LocalCA) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			var ip net.IP
			if hello.Conn != nil {
				if a, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
					ip = a.IP
				}
			}
			return ca.leaf(hello.ServerName, ip)
		},
	}
}

// leaf returns (issuing once) the server certificate for name and ip.
func (ca *LocalCA) leaf(name string, ip net.IP) (*tls.Certificate, error) {
	k := name + "|" + ip.String()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.leaves[k]; c != nil && time.Until(c.Leaf.NotAfter) > 24*time.Hour {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"evofs"}, CommonName: "evofs serve"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, 90),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if name != "" && name != "localhost" {
		if nip := net.ParseIP(name); nip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, nip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	if ip != nil && !ip.IsUnspecified() && !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	ca.leaves[k] = c
	return c, nil
}

// ListenTLS wraps ln in TLS with the LocalCA of dir (default: dataDir/tls,
// or evofs/serve-tls under the user's config dir when dataDir is empty) and
// returns it with the path of the CA file clients are to trust.
func ListenTLS(ln net.Listener, dir, dataDir string) (net.Listener, string, error) {
	if dir == "" {
		if dataDir != "" {
			dir = filepath.Join(dataDir, "tls")
		} else {
			cd, err := os.UserConfigDir()
			if err != nil {
				return nil, "", fmt.Errorf("tls: no directory for the CA: %w", err)
			}
			dir = filepath.Join(cd, "evofs", "serve-tls")
		}
	}
	ca, err := OpenLocalCA(dir)
	if err != nil {
		return nil, "", err
	}
	return tls.NewListener(ln, ca.TLSConfig()), ca.CertFile, nil
}
