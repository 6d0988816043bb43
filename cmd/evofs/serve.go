package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"evofs/remote/emulator"
)

// runServe runs the local File API service until SIGINT/SIGTERM.
func runServe(args []string) error {
	fl := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fl.String("addr", "127.0.0.1:8080", "listen address")
	data := fl.String("data", "", "persist files under this directory (default: in memory)")
	token := fl.String("token", "", "the accepted bearer token (default: any non-empty token)")
	delay := fl.Duration("publish-delay", 0, "delay between an upload's commit and the new version becoming visible")
	ttl := fl.Duration("url-ttl", 30*time.Minute, "lifetime of pre-signed URLs")
	mbit := fl.Float64("download-mbit", 0, "shape downloads like a network link of this many Mbit/s shared by all transfers (default: unshaped)")
	rtt := fl.Duration("rtt", 0, "round trip added before the first byte of every download")
	level := fl.String("log-level", "info", "log level (debug, info, warn, error)")
	useTLS := fl.Bool("tls", false, "serve HTTPS with a certificate from a local CA created once in --tls-dir (use --addr 127.0.0.1:443 for clients that drop the port)")
	tlsDir := fl.String("tls-dir", "", "where the local CA lives (default: DATA/tls, or evofs/serve-tls under the user's config dir when in memory)")
	fl.Parse(args)
	log, err := newLogger(*level)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGPIPE) // a closed stderr pipe must not kill the service
	o := emulator.Options{DataDir: *data, Owner: "evofs serve --addr " + *addr, PublishDelay: *delay, URLTTL: *ttl, Logger: log,
		Link: emulator.Link{Bandwidth: int64(*mbit * 1e6 / 8), RTT: *rtt}}
	if *token != "" {
		o.Tokens = map[string]emulator.Grant{*token: {User: emulator.LocalUser, Role: emulator.RoleOwner}}
	}
	srv, err := emulator.New(o)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if *useTLS {
		var caFile string
		if ln, caFile, err = emulator.ListenTLS(ln, *tlsDir, *data); err != nil {
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
