package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"evofs/remote/emulator"
)

// serveFlags are the flags of `evofs serve`.
type serveFlags struct {
	addr, data, token, level, tlsDir string
	delay, ttl, rtt                  time.Duration
	mbit, upMbit                     float64
	useTLS                           bool
	blobBackend                      string
	azureAccount, azureKey           string
}

func serveCommand() *cobra.Command {
	o := &serveFlags{}
	c := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Run the local File API service (what 'evofs mount --local' embeds)",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			return runServe(o)
		},
	}
	fl := c.Flags()
	fl.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address")
	fl.StringVar(&o.data, "data", "", "persist files under this directory (default: in memory)")
	fl.StringVar(&o.token, "token", "", "the accepted bearer token (default: any non-empty token)")
	fl.DurationVar(&o.delay, "publish-delay", 0, "delay between an upload's commit and the new version becoming visible")
	fl.DurationVar(&o.ttl, "url-ttl", 30*time.Minute, "lifetime of pre-signed URLs")
	fl.Float64Var(&o.mbit, "download-mbit", 0, "shape downloads like a network link of this many Mbit/s shared by all transfers (default: unshaped)")
	fl.Float64Var(&o.upMbit, "upload-mbit", 0, "shape uploads like a network link of this many Mbit/s shared by all transfers (default: unshaped)")
	fl.DurationVar(&o.rtt, "rtt", 0, "round trip added before the first byte of every download and upload")
	fl.StringVar(&o.level, "log-level", "info", "log level (debug, info, warn, error)")
	fl.BoolVar(&o.useTLS, "tls", false, "serve HTTPS with a certificate from a local CA created once in --tls-dir (use --addr 127.0.0.1:443 for clients that drop the port)")
	fl.StringVar(&o.tlsDir, "tls-dir", "", "where the local CA lives (default: DATA/tls, or evofs/serve-tls under the user's config dir when in memory)")
	fl.StringVar(&o.blobBackend, "blob-backend", "", "keep blobs elsewhere: azurite=URL (an Azure Storage blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1); the pre-signed URLs are then its service SAS URLs")
	fl.StringVar(&o.azureAccount, "azure-account", "", "storage account of --blob-backend (default: $AZURE_STORAGE_ACCOUNT or Azurite's devstoreaccount1)")
	fl.StringVar(&o.azureKey, "azure-key", "", "shared key of that account (default: $AZURE_STORAGE_KEY or Azurite's well-known key)")
	return c
}

// azureBlobs reads --blob-backend (nil when blobs stay in the service).
func (f *serveFlags) azureBlobs() (*emulator.AzureBlobs, error) {
	if f.blobBackend == "" {
		return nil, nil
	}
	kind, endpoint, ok := strings.Cut(f.blobBackend, "=")
	if !ok || kind != "azurite" || endpoint == "" {
		return nil, usageErr(fmt.Errorf("--blob-backend %q: want azurite=URL", f.blobBackend))
	}
	return &emulator.AzureBlobs{Endpoint: endpoint,
		Account: firstNonEmpty(f.azureAccount, os.Getenv("AZURE_STORAGE_ACCOUNT")),
		Key:     firstNonEmpty(f.azureKey, os.Getenv("AZURE_STORAGE_KEY"))}, nil
}

// runServe runs the local File API service until SIGINT/SIGTERM.
func runServe(f *serveFlags) error {
	log, err := newLogger(f.level)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGPIPE) // a closed stderr pipe must not kill the service
	az, err := f.azureBlobs()
	if err != nil {
		return err
	}
	o := emulator.Options{DataDir: f.data, AzureBlobs: az, Owner: "evofs serve --addr " + f.addr, PublishDelay: f.delay, URLTTL: f.ttl, Logger: log,
		Link: emulator.Link{Bandwidth: int64(f.mbit * 1e6 / 8), UploadBandwidth: int64(f.upMbit * 1e6 / 8), RTT: f.rtt}}
	if f.token != "" {
		o.Tokens = map[string]emulator.Grant{f.token: {User: emulator.LocalUser, Role: emulator.RoleOwner}}
	}
	srv, err := emulator.New(o)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if f.useTLS {
		var caFile string
		if ln, caFile, err = emulator.ListenTLS(ln, f.tlsDir, f.data); err != nil {
			return err
		}
		scheme = "https"
		fmt.Printf("evofs serve: CA certificate at %s (trust it with SSL_CERT_FILE=%s or evofs mount --ca-file)\n", caFile, caFile)
	}
	fmt.Printf("evofs serve: File API at %s://%s\n", scheme, ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveUntil(ctx, ln, srv, log)
}

// serveUntil serves h on ln until ctx ends, then shuts down gracefully.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, log *logrus.Entry) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.WithError(err).Warn("shutting down the service")
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
