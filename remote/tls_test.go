package remote

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"evofs/remote/emulator"
)

// TestTrustCAFile: the client refuses a server whose CA it does not know,
// and after TrustCAFile publishes and downloads over HTTPS, every URL it is
// handed (self, upload, download) on the host it used.
func TestTrustCAFile(t *testing.T) {
	srv, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, caFile, err := emulator.ListenTLS(raw, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	_, port, _ := net.SplitHostPort(raw.Addr().String())
	base := "https://localhost:" + port
	cfg := Config{BaseURL: base, Org: uuid.New(), Workspace: uuid.New(), Tokens: StaticToken("tls-token"),
		Retry: RetryPolicy{MaxAttempts: 2, MinDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond}, SinglePutThreshold: 64 << 10}

	untrusting, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.List(t.Context(), ListOptions{}); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("list against an unknown CA: %v, want an unknown-authority error", err)
	}
	if err := TrustCAFile(caFile + ".missing"); err == nil {
		t.Fatal("a missing CA file accepted")
	}
	if err := TrustCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("tls!"), 100_000) // several blocks
	m, err := c.Publish(t.Context(), Target{Path: "secure/f.bin"}, bytes.NewReader(data), int64(len(data)), PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetByPath(t.Context(), "secure/f.bin", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{got.Download, got.Self} {
		if !strings.HasPrefix(u, base+"/") {
			t.Fatalf("URL %q is not on %s", u, base)
		}
	}
	buf := make(memWriterAt, m.Size)
	if err := c.Download(t.Context(), c.NewBlob(got), buf, 0, got.Size, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data) {
		t.Fatal("downloaded bytes differ")
	}
}
