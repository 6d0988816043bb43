package integration

// Speed targets of the mount, each measured against its baseline in the same
// run (run them with `make bench`, or one of them with e.g.
// `go test -run '^$' -bench 'Tree20k/find' -benchtime 1x ./integration/`).
//
// Every benchmark reports "ratio" = baseline time / evofs time for the same
// work (so >= 1 means evofs is as fast as the baseline; the aims below are
// targets to read, not assertions), plus the absolute figures it is made of
// (MB/s, files/s, seconds, request counts, MiB). Heavy setup (seeding the
// service, local copies) happens once per benchmark function, outside the
// timed sections, and only when the benchmark is selected with -bench.
//
// Fairness rules: timed sections read into a reused buffer and never hash or
// compare (correctness is checked untimed right after); the page cache is
// written back and dropped (/proc/sys/vm/drop_caches, root only) before each
// side of a comparison that reads from disk; baselines use a client with the
// mount's own client settings; loopback baselines are go-fuse loopback mounts
// with the mount's kernel cache lifetimes and without FUSE passthrough, so
// both sides pay the same FUSE round trips (go-fuse's loopback would
// otherwise hand its files to the kernel: see loopbackMount).

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"evofs/remote"
	"evofs/remote/emulator"
)

const (
	mib = 1 << 20
	// readBuf is the user buffer of sequential reads (all sides).
	readBuf = 1 * mib
)

// ---------------------------------------------------------------------------
// 1 and 3: sequential reads.

// BenchmarkRead512MiB: a 512 MiB file read sequentially through the mount.
//   - cold: fresh cache (a new mount each iteration) vs a direct parallel
//     Client.Download of the same download URL into a local file, over the
//     unshaped loopback. Aim >= 0.8.
//   - warm: fully cached, page cache dropped, vs reading a local copy of the
//     same bytes with the page cache dropped. Aim >= 0.5.
func BenchmarkRead512MiB(b *testing.B) {
	requireFUSE(b)
	ts, data := seedFile(b, "data/seq-512.bin", 512*mib, 51)
	b.Run("cold", func(b *testing.B) { benchColdRead(b, ts, "data/seq-512.bin", data, 0.8) })
	b.Run("warm", func(b *testing.B) { benchWarmRead(b, ts, "data/seq-512.bin", data, 0.5) })
}

// coldLinks are the networks the cold 1 GiB read is compared over: links a
// user has (shaped by the service: shared bandwidth, round trip per
// request), and the unshaped in-process loopback, where no network limits
// either side and the ratio measures what the two cores cost instead: the
// mount hands every byte through the kernel twice more than the baseline
// (FUSE reply and the reader's copy), so there it is CPU-bound.
var coldLinks = []struct {
	name string
	link emulator.Link
}{
	{"link=1Gbps", emulator.Link{Bandwidth: 125e6, RTT: 2 * time.Millisecond}},
	{"link=5Gbps", emulator.Link{Bandwidth: 625e6, RTT: 2 * time.Millisecond}},
	{"link=10Gbps", emulator.Link{Bandwidth: 1250e6, RTT: 2 * time.Millisecond}},
	{"link=loopback", emulator.Link{}},
}

// BenchmarkColdRead1GiB: cold sequential read of a 1 GiB file vs a direct
// parallel download of the same URL into a local file, over each of
// coldLinks. Aim >= 0.9.
func BenchmarkColdRead1GiB(b *testing.B) {
	requireFUSE(b)
	ts, data := seedFile(b, "data/seq-1g.bin", 1024*mib, 52)
	for _, l := range coldLinks {
		b.Run(l.name, func(b *testing.B) {
			ts.SetLink(l.link)
			defer ts.SetLink(emulator.Link{})
			benchColdRead(b, ts, "data/seq-1g.bin", data, 0.9)
		})
	}
}

// seedFile puts size reproducible random bytes at p on a fresh in-memory service.
func seedFile(b *testing.B, p string, size int, seed int64) (*emulator.TestServer, []byte) {
	b.Helper()
	ts := emulator.NewTestServer(b, emulator.Options{MaxBlobSize: 2 << 30})
	data := randomBytes(seed, size)
	if _, _, err := ts.PutFile(ts.Org, ts.Workspace, p, data); err != nil {
		b.Fatal(err)
	}
	return ts, data
}

// benchColdRead also reports the CPU time (of this process: service,
// client, mount and reader) each side spent per GiB.
func benchColdRead(b *testing.B, ts *emulator.TestServer, p string, data []byte, aim float64) {
	requireDropCaches(b)
	ctx := context.Background()
	c := benchClient(b, ts)
	meta, err := c.GetByPath(ctx, p, remote.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	local := filepath.Join(b.TempDir(), "direct.bin")
	buf := make([]byte, readBuf)
	var tMount, tDirect, cpuMount, cpuDirect time.Duration
	var getsMount, getsDirect int
	first := true
	iters := 0
	for b.Loop() {
		iters++
		// Baseline: parallel ranged GETs into a local file.
		f, err := os.OpenFile(local, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		dropCaches(b, 1)
		ts.ResetRequests()
		cpu := processCPU()
		tDirect += timed(func() {
			if err := c.Download(ctx, c.NewBlob(meta), f, 0, meta.Size, nil); err != nil {
				b.Fatal(err)
			}
		})
		cpuDirect += processCPU() - cpu
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		getsDirect += ts.Requests(emulator.OpGetBlob)

		// Subject: a fresh mount (empty cache), read from the first byte.
		m := mountOn(b, ts, mountOpts{})
		dropCaches(b, 1)
		ts.ResetRequests()
		var n int64
		cpu = processCPU()
		tMount += timed(func() { n = readSeq(b, m.path(p), buf) })
		cpuMount += processCPU() - cpu
		getsMount += ts.Requests(emulator.OpGetBlob)
		if n != int64(len(data)) {
			b.Fatalf("read %d bytes through the mount, want %d", n, len(data))
		}
		if first {
			first = false
			compareFile(b, m.path(p), data)
			compareFile(b, local, data)
		}
		m.unmount()
	}
	gib := float64(iters) * float64(len(data)) / (1 << 30)
	b.ReportMetric(float64(getsMount)/float64(iters), "mount-blob-GETs")
	b.ReportMetric(float64(getsDirect)/float64(iters), "direct-blob-GETs")
	b.ReportMetric(cpuMount.Seconds()/gib, "mount-cpu-s/GiB")
	b.ReportMetric(cpuDirect.Seconds()/gib, "direct-cpu-s/GiB")
	b.Logf("cold read: %d ranged blob GETs through the mount, %d direct; CPU %.2f s/GiB through the mount, %.2f direct",
		getsMount/iters, getsDirect/iters, cpuMount.Seconds()/gib, cpuDirect.Seconds()/gib)
	reportRead(b, iters, "cold read", len(data), tMount, tDirect, "direct", aim)
}

// processCPU is the user+system CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchWarmRead(b *testing.B, ts *emulator.TestServer, p string, data []byte, aim float64) {
	requireDropCaches(b)
	m := mountOn(b, ts, mountOpts{})
	compareFile(b, m.path(p), data) // fills the cache
	localDir := b.TempDir()
	local := filepath.Join(localDir, "local.bin")
	writeFile(b, local, data)
	// Context only (not in the ratio): the same local file through go-fuse
	// loopback mounts, served in userspace (what FUSE round trips cost) and
	// with kernel passthrough.
	lo := filepath.Join(loopbackMount(b, localDir, false), "local.bin")
	pt := filepath.Join(loopbackMount(b, localDir, true), "local.bin")
	ts.ResetRequests()
	buf := make([]byte, readBuf)
	var tMount, tLocal, tLoop, tPass time.Duration
	iters := 0
	for b.Loop() {
		iters++
		dropCaches(b, 1)
		tLocal += timed(func() { readSeq(b, local, buf) })
		dropCaches(b, 1)
		tLoop += timed(func() { readSeq(b, lo, buf) })
		dropCaches(b, 1)
		tPass += timed(func() { readSeq(b, pt, buf) })
		dropCaches(b, 1)
		tMount += timed(func() { readSeq(b, m.path(p), buf) })
	}
	if n := ts.Requests(emulator.OpGetBlob); n != 0 {
		b.Errorf("warm reads made %d blob requests", n)
	}
	lmb := mbps(int64(len(data))*int64(iters), tLoop)
	pmb := mbps(int64(len(data))*int64(iters), tPass)
	b.ReportMetric(lmb, "loopback-MB/s")
	b.ReportMetric(pmb, "passthrough-MB/s")
	b.Logf("warm read of the local copy through loopback mounts: userspace %.0f MB/s, passthrough %.0f MB/s", lmb, pmb)
	reportRead(b, iters, "warm read", len(data), tMount, tLocal, "local", aim)
}

func reportRead(b *testing.B, iters int, what string, size int, tMount, tBase time.Duration, base string, aim float64) {
	n := float64(iters)
	mb := mbps(int64(size)*int64(iters), tMount)
	bb := mbps(int64(size)*int64(iters), tBase)
	b.ReportMetric(mb, "mount-MB/s")
	b.ReportMetric(bb, base+"-MB/s")
	r := tBase.Seconds() / tMount.Seconds()
	b.ReportMetric(r, "ratio")
	b.Logf("%s %d MiB: mount %.0f MB/s, %s %.0f MB/s, ratio %.2f (aim >= %.1f), %d iteration(s)",
		what, size/mib, mb, base, bb, r, aim, int(n))
}

// ---------------------------------------------------------------------------
// 2: write + publish.

// BenchmarkCpPublish and BenchmarkCloseToVisible1GiB, in bench_write_test.go.

// ---------------------------------------------------------------------------
// 4: random 4 KiB reads.

// BenchmarkRandomRead4K: preads of 4 KiB at reproducible random 4 KiB-aligned
// offsets of a fully cached 256 MiB file through the mount vs the same reads
// through a go-fuse loopback mount of a local copy served in userspace (one
// FUSE round trip per read, like evofs); page cache dropped before each side.
// Aim >= 0.8. passthrough-µs/read is the same loopback with kernel FUSE
// passthrough (reads never reach userspace), for context.
func BenchmarkRandomRead4K(b *testing.B) {
	requireFUSE(b)
	requireDropCaches(b)
	const (
		size  = 256 * mib
		block = 4 << 10
		reads = 20000
	)
	ts, data := seedFile(b, "data/random.bin", size, 54)
	m := mountOn(b, ts, mountOpts{})
	compareFile(b, m.path("data/random.bin"), data) // fills the cache
	localDir := b.TempDir()
	writeFile(b, filepath.Join(localDir, "random.bin"), data)
	lo := loopbackMount(b, localDir, false)
	pt := loopbackMount(b, localDir, true)

	rng := rand.New(rand.NewPCG(4, 4096))
	offs := make([]int64, reads)
	for i := range offs {
		offs[i] = rng.Int64N(size/block) * block
	}
	run := func(p string) time.Duration {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, block)
		dropCaches(b, 1)
		start := time.Now()
		for _, off := range offs {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			// 4 KiB memcmp is noise next to a FUSE round trip; same on both sides.
			if !bytes.Equal(buf, data[off:off+block]) {
				b.Fatalf("%s: wrong bytes at %d", p, off)
			}
		}
		return time.Since(start)
	}
	ts.ResetRequests()
	var tMount, tLoop, tPass time.Duration
	iters := 0
	for b.Loop() {
		iters++
		tLoop += run(filepath.Join(lo, "random.bin"))
		tPass += run(filepath.Join(pt, "random.bin"))
		tMount += run(m.path("data/random.bin"))
	}
	if n := ts.Requests(emulator.OpGetBlob); n != 0 {
		b.Errorf("cached random reads made %d blob requests", n)
	}
	n := float64(iters * reads)
	mu, lu, pu := tMount.Seconds()*1e6/n, tLoop.Seconds()*1e6/n, tPass.Seconds()*1e6/n
	r := tLoop.Seconds() / tMount.Seconds()
	b.ReportMetric(mu, "mount-µs/read")
	b.ReportMetric(lu, "loopback-µs/read")
	b.ReportMetric(pu, "passthrough-µs/read")
	b.ReportMetric(r, "ratio")
	b.Logf("random 4 KiB preads (%d): mount %.1f µs/read, loopback %.1f µs/read (passthrough %.1f), ratio %.2f (aim >= 0.8)",
		reads, mu, lu, pu, r)
}

// ---------------------------------------------------------------------------
// 5: tree walks.

// BenchmarkTree20k walks 20,000 files in 2,000 folders (40 top folders, each
// with 49 subfolders; 10 files in every folder).
//   - ls-lR: WalkDir + Lstat of every entry, warm evofs vs a loopback mount
//     of the same tree. Aim >= 0.5.
//   - find: WalkDir names only, same comparison. Aim >= 0.5.
//   - cold: mount (which lists the workspace) + first ls-lR walk of a fresh
//     mount, in seconds (aim < 2 s); ratio against a fresh loopback mount
//     walked with the kernel's dentry, inode and page caches dropped.
//
// Warm walks drop the kernel's dentries and inodes first (drop_caches 2), so
// both sides answer every LOOKUP/GETATTR/READDIR themselves rather than the
// kernel from its caches; warm-requests counts the service requests made by
// the evofs walk (want 0).
func BenchmarkTree20k(b *testing.B) {
	requireFUSE(b)
	requireDropCaches(b)
	const top, sub, files = 40, 49, 10
	ts := emulator.NewTestServer(b, emulator.Options{})
	localDir := b.TempDir()
	var dirs []string
	for t := range top {
		d := fmt.Sprintf("t%02d", t)
		dirs = append(dirs, d)
		for s := range sub {
			dirs = append(dirs, fmt.Sprintf("%s/s%02d", d, s))
		}
	}
	seedStart := time.Now()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(localDir, d), 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range files {
			p := fmt.Sprintf("%s/f%d.txt", d, f)
			body := []byte(p + "\n")
			if _, _, err := ts.PutFile(ts.Org, ts.Workspace, p, body); err != nil {
				b.Fatal(err)
			}
			writeFile(b, filepath.Join(localDir, p), body)
		}
	}
	wantEntries := 1 + len(dirs) + len(dirs)*files
	b.Logf("seeded %d folders, %d files in %v", len(dirs), len(dirs)*files, time.Since(seedStart).Round(time.Millisecond))

	check := func(what string, n int) {
		if n != wantEntries {
			b.Fatalf("%s walked %d entries, want %d", what, n, wantEntries)
		}
	}
	warm := func(b *testing.B, what string, walk func(testing.TB, string) int) {
		m := mountOn(b, ts, mountOpts{})
		lo := loopbackMount(b, localDir, false)
		check(what+" (warm-up, mount)", walk(b, m.dir))
		check(what+" (warm-up, loopback)", walk(b, lo))
		var tMount, tLoop time.Duration
		var reqs int
		iters := 0
		for b.Loop() {
			iters++
			dropCaches(b, 2)
			start := time.Now()
			check(what+" (loopback)", walk(b, lo))
			tLoop += time.Since(start)
			dropCaches(b, 2)
			ts.ResetRequests()
			start = time.Now()
			check(what+" (mount)", walk(b, m.dir))
			tMount += time.Since(start)
			reqs += ts.Requests(emulator.OpAny)
		}
		n := float64(iters)
		r := tLoop.Seconds() / tMount.Seconds()
		b.ReportMetric(tMount.Seconds()/n, "mount-s")
		b.ReportMetric(tLoop.Seconds()/n, "loopback-s")
		b.ReportMetric(float64(wantEntries)*n/tMount.Seconds(), "mount-entries/s")
		b.ReportMetric(float64(reqs)/n, "warm-requests")
		b.ReportMetric(r, "ratio")
		b.Logf("warm %s of %d entries: mount %.3f s, loopback %.3f s, ratio %.2f (aim >= 0.5), %d service requests",
			what, wantEntries, tMount.Seconds()/n, tLoop.Seconds()/n, r, reqs/iters)
	}
	b.Run("ls-lR", func(b *testing.B) { warm(b, "ls -lR", walkLstat) })
	b.Run("find", func(b *testing.B) { warm(b, "find", walkNames) })
	b.Run("cold", func(b *testing.B) {
		var tMount, tLoop time.Duration
		var reqs int
		iters := 0
		for b.Loop() {
			iters++
			dropCaches(b, 3)
			start := time.Now()
			lo := loopbackMount(b, localDir, false)
			check("ls -lR (cold loopback)", walkLstat(b, lo))
			tLoop += time.Since(start)

			ts.ResetRequests()
			start = time.Now()
			m := mountOn(b, ts, mountOpts{}) // lists the workspace
			check("ls -lR (cold mount)", walkLstat(b, m.dir))
			tMount += time.Since(start)
			reqs += ts.Requests(emulator.OpAny)
			m.unmount()
		}
		n := float64(iters)
		r := tLoop.Seconds() / tMount.Seconds()
		b.ReportMetric(tMount.Seconds()/n, "cold-s")
		b.ReportMetric(tLoop.Seconds()/n, "loopback-cold-s")
		b.ReportMetric(float64(reqs)/n, "cold-requests")
		b.ReportMetric(r, "ratio")
		b.Logf("cold mount + ls -lR of %d entries: %.3f s (aim < 2 s), %d service requests; cold loopback %.3f s, ratio %.2f",
			wantEntries, tMount.Seconds()/n, reqs/iters, tLoop.Seconds()/n, r)
	})
}

// walkLstat is `ls -lR`: every entry's attributes.
func walkLstat(tb testing.TB, root string) int {
	n := 0
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// walkNames is `find`: names (and d_type) only.
func walkNames(tb testing.TB, root string) int {
	n := 0
	err := filepath.WalkDir(root, func(_ string, _ fs.DirEntry, err error) error {
		n++
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// ---------------------------------------------------------------------------
// 6: memory of a large copy.

// BenchmarkCopy4GiBPeakRSS copies a 4 GiB file out of a fresh mount into
// /dev/null and reports how much the process's peak RSS (VmHWM, reset just
// before) grew: aim < 256 MiB. The service keeps blobs on disk (DataDir) and
// is seeded by streaming generated bytes, so neither the service nor the
// seed sits in RSS. The same is measured around a direct Client.Download of
// the same URL into a discarding io.WriterAt; ratio = direct time / mount
// time of the copy (throughput, for context; the aim is on the RSS).
func BenchmarkCopy4GiBPeakRSS(b *testing.B) {
	requireFUSE(b)
	requireDropCaches(b)
	const size = 4096 * mib
	ts := emulator.NewTestServer(b, emulator.Options{DataDir: b.TempDir()})
	c := benchClient(b, ts)
	ctx := context.Background()
	gen := genReaderAt{seed: 0x5eed}
	seedStart := time.Now()
	meta, err := c.Publish(ctx, remote.Target{Path: "data/big-4g.bin"}, gen, size, remote.PublishOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded 4 GiB through the API in %v", time.Since(seedStart).Round(time.Millisecond))
	buf := make([]byte, readBuf)
	var tMount, tDirect time.Duration
	var growMount, growDirect int64
	iters := 0
	for b.Loop() {
		iters++
		dropCaches(b, 1)
		base := resetPeakRSS(b)
		tDirect += timed(func() {
			if err := c.Download(ctx, c.NewBlob(meta), discardAt{}, 0, size, nil); err != nil {
				b.Fatal(err)
			}
		})
		growDirect = max(growDirect, peakRSS(b)-base)

		m := mountOn(b, ts, mountOpts{})
		p := m.path("data/big-4g.bin")
		dropCaches(b, 1)
		base = resetPeakRSS(b)
		tMount += timed(func() {
			in, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(out, struct{ io.Reader }{in}, buf) // no splice: a plain read/write loop
			if err != nil || n != size {
				b.Fatalf("copy: %d bytes, %v", n, err)
			}
			in.Close()
			out.Close()
		})
		growMount = max(growMount, peakRSS(b)-base)
		checkSamples(b, p, gen, size)
		m.unmount()
	}
	r := tDirect.Seconds() / tMount.Seconds()
	b.ReportMetric(float64(growMount)/mib, "peak-rss-growth-MiB")
	b.ReportMetric(float64(growDirect)/mib, "direct-peak-rss-growth-MiB")
	b.ReportMetric(mbps(size*int64(iters), tMount), "mount-MB/s")
	b.ReportMetric(mbps(size*int64(iters), tDirect), "direct-MB/s")
	b.ReportMetric(r, "ratio")
	b.Logf("4 GiB copy out of the mount: peak RSS +%d MiB (aim < 256), %.0f MB/s; direct download: +%d MiB, %.0f MB/s; ratio %.2f",
		growMount/mib, mbps(size*int64(iters), tMount), growDirect/mib, mbps(size*int64(iters), tDirect), r)
}

// genReaderAt yields reproducible pseudo-random bytes of any length without
// holding them: byte i is byte i%8 of mix(seed + i/8).
type genReaderAt struct{ seed uint64 }

func mix64(x uint64) uint64 { // splitmix64 finaliser
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (g genReaderAt) ReadAt(p []byte, off int64) (int, error) {
	for i := 0; i < len(p); {
		pos := uint64(off) + uint64(i)
		w := mix64(g.seed + pos/8)
		if pos%8 == 0 && len(p)-i >= 8 {
			binary.LittleEndian.PutUint64(p[i:], w)
			i += 8
			continue
		}
		p[i] = byte(w >> (8 * (pos % 8)))
		i++
	}
	return len(p), nil
}

// checkSamples compares 16 reproducible 1 MiB ranges (and the last bytes) of
// p with the generator.
func checkSamples(b *testing.B, p string, gen genReaderAt, size int64) {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(6, 6))
	got, want := make([]byte, mib), make([]byte, mib)
	offs := []int64{0, size - mib}
	for range 16 {
		offs = append(offs, rng.Int64N(size-mib))
	}
	for _, off := range offs {
		if _, err := f.ReadAt(got, off); err != nil {
			b.Fatal(err)
		}
		gen.ReadAt(want, off)
		if !bytes.Equal(got, want) {
			b.Fatalf("%s: wrong bytes in [%d, %d)", p, off, off+mib)
		}
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// resetPeakRSS returns memory the Go runtime holds but does not use, resets
// VmHWM to the current RSS and returns that RSS in bytes.
func resetPeakRSS(b *testing.B) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("resetting the peak RSS: %v", err)
	}
	return procStatus(b, "VmHWM:")
}

func peakRSS(b *testing.B) int64 { return procStatus(b, "VmHWM:") }

// procStatus reads a "kB" field of /proc/self/status in bytes.
func procStatus(b *testing.B, field string) int64 {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("%s: %v", line, err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// ---------------------------------------------------------------------------
// Helpers.

// benchClient is a client of ts with the settings mountOn gives the mount's
// client, for baselines.
func benchClient(tb testing.TB, ts *emulator.TestServer) *remote.Client {
	tb.Helper()
	c, err := remote.New(remote.Config{
		BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: remote.StaticToken(ts.Token),
		PollMin: 5 * time.Millisecond, PollMax: 100 * time.Millisecond,
		Retry: remote.RetryPolicy{MaxAttempts: 5, MinDelay: 5 * time.Millisecond, MaxDelay: 100 * time.Millisecond},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// loopbackMount mounts a go-fuse loopback of dir with the kernel cache
// lifetimes fusefs.Mount uses and returns the mount point; unmounted at
// cleanup. With passthrough false, file reads are served in userspace like
// evofs serves them (one FUSE round trip each); with true, go-fuse registers
// the backing file with the kernel (FUSE passthrough, Linux >= 6.9 as root)
// and reads never reach userspace.
func loopbackMount(tb testing.TB, dir string, passthrough bool) string {
	tb.Helper()
	root, err := gofs.NewLoopbackRoot(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if !passthrough {
		root = &userspaceLoopback{root.(*gofs.LoopbackNode)}
	}
	mnt := tb.TempDir()
	ttl := time.Second
	neg := time.Duration(0)
	server, err := gofs.Mount(mnt, root, &gofs.Options{
		MountOptions: fuse.MountOptions{FsName: "loopback", Name: "loopback", DirectMount: os.Geteuid() == 0, MaxWrite: 1 << 20},
		EntryTimeout: &ttl, AttrTimeout: &ttl, NegativeTimeout: &neg,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for server.Unmount() != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // EBUSY: nothing to wait on but time
		}
		server.Wait()
	})
	return mnt
}

// userspaceLoopback is a loopback node (and, through WrapChild, every node
// below it) whose open files decline FUSE passthrough.
type userspaceLoopback struct{ *gofs.LoopbackNode }

func (n *userspaceLoopback) WrapChild(_ context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &userspaceLoopback{ops.(*gofs.LoopbackNode)}
}

func (n *userspaceLoopback) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return noPassthrough{fh.(*gofs.LoopbackFile)}, fl, 0
}

type noPassthrough struct{ *gofs.LoopbackFile }

func (noPassthrough) PassthroughFd() (int, bool) { return 0, false }

// requireDropCaches skips unless this process may drop the kernel's caches.
func requireDropCaches(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile("/proc/sys/vm/drop_caches", os.O_WRONLY, 0)
	if err != nil {
		tb.Skipf("needs to drop the page cache for a fair comparison: %v", err)
	}
	f.Close()
}

// dropCaches writes dirty pages back, then drops the kernel's clean caches:
// what=1 the page cache, 2 dentries and inodes, 3 both.
func dropCaches(tb testing.TB, what int) {
	tb.Helper()
	syncDisks()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte(strconv.Itoa(what)), 0); err != nil {
		tb.Fatalf("drop caches: %v", err)
	}
}

// syncDisks writes dirty pages back so an earlier phase's writeback does not
// compete with the next timed one.
func syncDisks() { unix.Sync() }

// readSeq reads p from start to end into buf and returns the byte count.
func readSeq(tb testing.TB, p string, buf []byte) int64 {
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// compareFile reads p sequentially and compares it with want.
func compareFile(tb testing.TB, p string, want []byte) {
	tb.Helper()
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, readBuf)
	var off int
	for {
		k, err := io.ReadFull(f, buf)
		if k > 0 {
			if off+k > len(want) || !bytes.Equal(buf[:k], want[off:off+k]) {
				tb.Fatalf("%s differs in [%d, %d)", p, off, off+k)
			}
			off += k
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if off != len(want) {
		tb.Fatalf("%s: %d bytes, want %d", p, off, len(want))
	}
}

// drainFor waits until everything the mount has pending is published.
func drainFor(tb testing.TB, m *testMount, d time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := m.core.Drain(ctx); err != nil {
		tb.Fatalf("drain: %v", err)
	}
}

func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
