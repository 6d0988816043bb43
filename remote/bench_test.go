package remote

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"evofs/remote/emulator"
)

// BenchmarkTransfer256MiB measures the client's blob transfers against bare
// net/http on the same in-memory emulator, in the same run:
//   - download: Client.Download (parallel ranged GETs into an io.WriterAt)
//     vs one plain GET of the same download URL into a buffer;
//   - upload: Client.Upload (parallel Put Block + Put Block List) vs one
//     plain Put Blob of the same bytes.
//
// Each measurement is taken `rounds` times per iteration, after a GC (the
// runs allocate GiBs), and the best kept: loopback throughput on a small
// machine is noisy.
// Reported: MB/s of each and download-ratio / upload-ratio (client / plain).
//
//	go test -run '^$' -bench Transfer256MiB -benchtime 1x ./remote/
func BenchmarkTransfer256MiB(b *testing.B) {
	const size = 256 << 20
	const rounds = 3
	ts := emulator.NewTestServer(b, emulator.Options{MaxBlobSize: 1 << 30})
	// Default configuration: 8 workers, 8 MiB blocks, 16 MiB single-put threshold.
	c, err := New(Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: StaticToken(ts.Token)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	data := randBytes(42, size)
	m, err := c.Publish(ctx, Target{Path: "bench/seed.bin"}, bytes.NewReader(data), size, PublishOptions{})
	if err != nil {
		b.Fatal(err)
	}
	plain := &http.Client{Transport: &http.Transport{}}
	dst := make(memWriterAt, size)
	pbuf := make([]byte, size)

	best := func(cur, d time.Duration) time.Duration {
		if cur == 0 || d < cur {
			return d
		}
		return cur
	}
	var tGet, tDown, tPut, tUp time.Duration
	b.ResetTimer()
	for b.Loop() {
		for r := range rounds {
			// (a) downloads
			runtime.GC()
			start := time.Now()
			resp, err := plain.Get(m.Download)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.ReadFull(resp.Body, pbuf)
			resp.Body.Close()
			if err != nil || n != size || resp.StatusCode != 200 {
				b.Fatalf("plain GET: %d %d %v", resp.StatusCode, n, err)
			}
			tGet = best(tGet, time.Since(start))

			runtime.GC()
			start = time.Now()
			if err := c.Download(ctx, c.NewBlob(m), dst, 0, size, nil); err != nil {
				b.Fatal(err)
			}
			tDown = best(tDown, time.Since(start))
			if r == 0 && !bytes.Equal(dst, data) {
				b.Fatal("download differs")
			}

			// (b) uploads; registration is not timed.
			tk, err := c.UpsertByPath(ctx, fmt.Sprintf("bench/plain-%d.bin", r), "")
			if err != nil {
				b.Fatal(err)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPut, tk.Upload, bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("x-ms-blob-type", "BlockBlob")
			runtime.GC()
			start = time.Now()
			resp, err = plain.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Fatalf("plain Put Blob: %d", resp.StatusCode)
			}
			tPut = best(tPut, time.Since(start))

			tg := Target{Path: fmt.Sprintf("bench/client-%d.bin", r)}
			tk, err = c.Register(ctx, tg, "")
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			start = time.Now()
			if err := c.Upload(ctx, tg, tk, bytes.NewReader(data), size, nil); err != nil {
				b.Fatal(err)
			}
			tUp = best(tUp, time.Since(start))
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(tGet), "plain-get-MB/s")
	b.ReportMetric(mbps(tDown), "download-MB/s")
	b.ReportMetric(mbps(tPut), "plain-put-MB/s")
	b.ReportMetric(mbps(tUp), "upload-MB/s")
	b.ReportMetric(tGet.Seconds()/tDown.Seconds(), "download-ratio")
	b.ReportMetric(tPut.Seconds()/tUp.Seconds(), "upload-ratio")
}
