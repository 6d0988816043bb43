package remote

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// trustedRoots, when set, replaces the system roots in the transports
// NewTransport makes from then on (the system roots honour SSL_CERT_FILE
// and SSL_CERT_DIR already).
var trustedRoots atomic.Pointer[x509.CertPool]

// TrustCAFile makes every transport NewTransport returns from now on trust
// the PEM certificates in path besides the system's roots: for a
// TLS-intercepting proxy or the local CA of `evofs serve --tls`. Call it
// before making clients.
func TrustCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("remote: CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("remote: CA file %s holds no PEM certificate", path)
	}
	trustedRoots.Store(pool)
	return nil
}

// tlsConfig is the client TLS configuration of NewTransport.
func tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: trustedRoots.Load()}
}
