package integration

// Write + publish benchmarks (see bench_test.go for the rules every
// benchmark follows). Both sides move the same bytes over the same link:
// the service shapes uploads and downloads alike (full duplex, a round trip
// per blob request), or nothing on the loopback.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
)

// writeLinks are the networks writes are compared over: 1 and 10 Gbit/s
// each way with a 2 ms round trip, and the unshaped in-process loopback
// (where the two cores, not the network, are the limit).
var writeLinks = []struct {
	name string
	link emulator.Link
}{
	{"link=1Gbps", emulator.Link{Bandwidth: 125e6, UploadBandwidth: 125e6, RTT: 2 * time.Millisecond}},
	{"link=10Gbps", emulator.Link{Bandwidth: 1250e6, UploadBandwidth: 1250e6, RTT: 2 * time.Millisecond}},
	{"link=loopback", emulator.Link{}},
}

// BenchmarkCpPublish: `cp` of a local file (in the page cache) into the
// mount until the new version is visible on the service, vs Client.Publish
// of the same file (register, upload, wait until visible) with the mount's
// client settings, for 512 MiB and 2 GiB over each of writeLinks. The mount
// streams the file while cp writes it. Aim >= 0.9 over the shaped links,
// >= 0.8 over the loopback.
func BenchmarkCpPublish(b *testing.B) {
	requireFUSE(b)
	for _, size := range []int64{512 * mib, 2048 * mib} {
		src, want := sourceFile(b, size, uint64(size))
		for _, l := range writeLinks {
			b.Run(fmt.Sprintf("size=%dMiB/%s", size/mib, l.name), func(b *testing.B) {
				benchCpPublish(b, src, size, want, l.link)
			})
		}
	}
}

func benchCpPublish(b *testing.B, src string, size int64, want string, link emulator.Link) {
	ts := emulator.NewTestServer(b, emulator.Options{MaxBlobSize: 4 << 30})
	c := benchClient(b, ts)
	m := mountOn(b, ts, mountOpts{})
	ctx := context.Background()
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var tMount, tDirect time.Duration
	iters := 0
	for b.Loop() {
		iters++
		direct, viaMount := fmt.Sprintf("direct-%d.bin", iters), fmt.Sprintf("mount-%d.bin", iters)
		ts.SetLink(link)
		syncDisks()
		tDirect += timed(func() {
			if _, err := c.Publish(ctx, remote.Target{Path: direct}, f, size, remote.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
		})
		syncDisks()
		tMount += timed(func() {
			if out, err := exec.Command("cp", src, m.path(viaMount)).CombinedOutput(); err != nil {
				b.Fatalf("cp: %v: %s", err, out)
			}
			drainFor(b, m, 10*time.Minute)
		})
		ts.SetLink(emulator.Link{})
		for _, p := range []string{direct, viaMount} {
			checkRemoteSum(b, c, p, size, want)
		}
	}
	n := size * int64(iters)
	mb, db := mbps(n, tMount), mbps(n, tDirect)
	r := tDirect.Seconds() / tMount.Seconds()
	b.ReportMetric(mb, "mount-MB/s")
	b.ReportMetric(db, "direct-MB/s")
	b.ReportMetric(r, "ratio")
	b.Logf("cp %d MiB until published: mount %.0f MB/s, direct Publish %.0f MB/s, ratio %.2f", size/mib, mb, db, r)
}

// BenchmarkCloseToVisible1GiB: a program writes 1 GiB in sequence into the
// mount and closes it; reported is the time from close() returning until
// the version is visible on the service (close-to-visible-s; aim under 1 s
// plus one poll over 1 Gbit/s), beside the time a direct Client.Publish of
// the same bytes takes from start to visible (direct-publish-s) and the
// write itself (write-s), over each of writeLinks. Over a shaped link the
// program produces its bytes at 80% of the link's upload bandwidth (no
// publish can finish sooner after close than the bytes take to cross the
// link, so a faster writer measures the link, not the mount); over the
// loopback it writes as fast as it can. ratio = close-to-visible / direct
// publish (lower is better: the share of a publish left after close).
func BenchmarkCloseToVisible1GiB(b *testing.B) {
	requireFUSE(b)
	const size = 1024 * mib
	src, want := sourceFile(b, size, 1024)
	for _, l := range writeLinks {
		b.Run(l.name, func(b *testing.B) {
			ts := emulator.NewTestServer(b, emulator.Options{MaxBlobSize: 4 << 30})
			c := benchClient(b, ts)
			m := mountOn(b, ts, mountOpts{})
			in, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			defer in.Close()
			buf := make([]byte, readBuf)
			var tVisible, tWrite, tDirect time.Duration
			iters := 0
			for b.Loop() {
				iters++
				direct, viaMount := fmt.Sprintf("direct-%d.bin", iters), fmt.Sprintf("mount-%d.bin", iters)
				ts.SetLink(l.link)
				syncDisks()
				tDirect += timed(func() {
					if _, err := c.Publish(context.Background(), remote.Target{Path: direct}, in, size, remote.PublishOptions{}); err != nil {
						b.Fatal(err)
					}
				})
				syncDisks()
				start := time.Now()
				out, err := os.Create(m.path(viaMount))
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < size; off += readBuf {
					if rate := float64(l.link.UploadBandwidth) * 0.8; rate > 0 {
						time.Sleep(time.Until(start.Add(time.Duration(float64(off) / rate * float64(time.Second))))) // pacing the producer
					}
					if _, err := in.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
					if _, err := out.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if err := out.Close(); err != nil {
					b.Fatal(err)
				}
				closed := time.Now()
				tWrite += closed.Sub(start)
				tVisible += timed(func() { waitVisible(b, c, viaMount) })
				ts.SetLink(emulator.Link{})
				checkRemoteSum(b, c, viaMount, size, want)
			}
			k := float64(iters)
			b.ReportMetric(tVisible.Seconds()/k, "close-to-visible-s")
			b.ReportMetric(tWrite.Seconds()/k, "write-s")
			b.ReportMetric(tDirect.Seconds()/k, "direct-publish-s")
			b.ReportMetric(tVisible.Seconds()/tDirect.Seconds(), "ratio")
			b.Logf("1 GiB: close to visible %.2f s (write %.2f s); direct Publish %.2f s",
				tVisible.Seconds()/k, tWrite.Seconds()/k, tDirect.Seconds()/k)
		})
	}
}

// waitVisible polls the service (every 5 ms, as the baseline's Publish
// starts polling) until a file is visible at p.
func waitVisible(tb testing.TB, c *remote.Client, p string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := c.GetByPath(ctx, p, remote.GetOptions{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never became visible: %v", p, err)
		}
		time.Sleep(5 * time.Millisecond) // polling the service, as a client would
	}
}

// sourceFile writes size reproducible random bytes to a temp file (left in
// the page cache) and returns its path and sha256.
func sourceFile(tb testing.TB, size int64, seed uint64) (string, string) {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "src.bin")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, 7))
	h := sha256.New()
	buf := make([]byte, 4*mib)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// checkRemoteSum streams the latest version at p from the service and
// checks its size and sha256.
func checkRemoteSum(tb testing.TB, c *remote.Client, p string, size int64, want string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := c.GetByPath(ctx, p, remote.GetOptions{})
	if err != nil {
		tb.Fatalf("%s: %v", p, err)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", m.Download, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s: download from %s failed", p, remote.RedactURL(m.Download))
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != size {
		tb.Fatalf("%s: downloaded %d of %d bytes: %v", p, n, size, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		tb.Fatalf("%s on the service: sha256 %s, want %s", p, got, want)
	}
}
