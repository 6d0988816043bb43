package remote

import (
	"crypto/sha256"
	"testing"
	"time"

	"evofs/remote/emulator"
)

// With 1 MiB/s each way, 2 MiB up and 2 MiB down cannot take less than
// about 1.9 s each (the bucket starts with 100 KiB). Only a lower bound is
// checked: a loaded machine makes transfers slower, never faster.
func TestBandwidthLimitPacesUploadsAndDownloads(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, emulator.Options{}, func(c *Config) {
		c.UploadLimit, c.DownloadLimit = limit, limit
		c.BlockSize, c.SinglePutThreshold = 512<<10, 512<<10 // several blocks in parallel share the limit
	})
	data := randBytes(11, 2<<20)
	start := time.Now()
	m := e.publish(t, Target{Path: "limited.bin"}, data)
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("2 MiB uploaded in %s under a 1 MiB/s limit", d)
	}
	buf := make(memWriterAt, len(data))
	start = time.Now()
	if err := e.c.Download(t.Context(), e.c.NewBlob(m), buf, 0, m.Size, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("2 MiB downloaded in %s under a 1 MiB/s limit", d)
	}
	if sha256.Sum256(buf) != sha256.Sum256(data) {
		t.Fatal("downloaded bytes differ")
	}
}
