package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

// ---------------------------------------------------------------------------
// 7: many small files.

// writebackTransfers is writeback.Config.Transfers' default: the number of
// parallel publishes of a mount, used as the baseline's parallelism.
const writebackTransfers = writeback.DefaultTransfers

var smallSets = []struct {
	name        string
	files, size int
}{
	{"500x4KiB", 500, 4 << 10},
	{"5000x1KiB", 5000, 1 << 10},
}

// BenchmarkSmallFiles: `cp -r` of a folder of small files into the mount
// (one writer, each close journaled durably before it returns), timed until
// cp returns ("cp", aim >= 2,000 files/s) and until every file is published
// ("all", aim >= 500 files/s), against the same files published by direct
// Client.Publish calls on writebackTransfers goroutines (the mount's publish
// parallelism) over the same link, in the same run. Ratios are direct time /
// mount time; files are checked by content on the service afterwards.
func BenchmarkSmallFiles(b *testing.B) {
	requireFUSE(b)
	if _, err := exec.LookPath("cp"); err != nil {
		b.Skip("no cp")
	}
	for _, l := range writeLinks { // the same links as the big writes
		b.Run(l.name, func(b *testing.B) {
			for _, s := range smallSets {
				b.Run(s.name, func(b *testing.B) { benchSmallFiles(b, l.link, s.files, s.size) })
			}
		})
	}
}

func benchSmallFiles(b *testing.B, link emulator.Link, files, size int) {
	ts := emulator.NewTestServer(b, emulator.Options{})
	c := benchClient(b, ts)
	m := mountOn(b, ts, mountOpts{})
	ctx := context.Background()
	src := filepath.Join(b.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("f%05d.bin", i) }
	bodies := make([][]byte, files)
	for i := range bodies {
		bodies[i] = randomBytes(int64(7000+i), size)
		if err := os.WriteFile(filepath.Join(src, name(i)), bodies[i], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ts.SetLink(link)
	defer ts.SetLink(emulator.Link{})

	var tAll, tCp, tDirect time.Duration
	iters := 0
	for b.Loop() {
		iters++
		directDir, mountDir := fmt.Sprintf("direct-%d", iters), fmt.Sprintf("mount-%d", iters)
		syncDisks()
		tDirect += timed(func() {
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, writebackTransfers)
			for range writebackTransfers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int(next.Add(1) - 1); i < files; i = int(next.Add(1) - 1) {
						t := remote.Target{Path: directDir + "/" + name(i)}
						if _, err := c.Publish(ctx, t, bytes.NewReader(bodies[i]), int64(size), remote.PublishOptions{}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		})
		syncDisks()
		start := time.Now()
		if out, err := exec.Command("cp", "-r", src, m.path(mountDir)).CombinedOutput(); err != nil {
			b.Fatalf("cp -r: %v: %s", err, out)
		}
		tCp += time.Since(start)
		drainFor(b, m, 10*time.Minute)
		tAll += time.Since(start)

		ts.SetLink(emulator.Link{}) // checking is not timed
		for i, body := range bodies {
			for _, d := range []string{directDir, mountDir} {
				p := d + "/" + name(i)
				got, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, p)
				if err != nil {
					b.Fatal(err)
				}
				mustEqual(b, p+" on the service", got, body)
			}
		}
		ts.SetLink(link)
	}
	n := float64(files * iters)
	fAll, fCp, fDirect := n/tAll.Seconds(), n/tCp.Seconds(), n/tDirect.Seconds()
	rAll, rCp := tDirect.Seconds()/tAll.Seconds(), tDirect.Seconds()/tCp.Seconds()
	b.ReportMetric(fAll, "all-files/s")
	b.ReportMetric(fCp, "cp-files/s")
	b.ReportMetric(fDirect, "direct-files/s")
	b.ReportMetric(rAll, "ratio")
	b.ReportMetric(rCp, "cp-ratio")
	b.Logf("%d × %d B: until published %.0f files/s (ratio %.2f), until cp returns %.0f files/s (ratio %.2f); direct Publish ×%d %.0f files/s",
		files, size, fAll, rAll, fCp, rCp, writebackTransfers, fDirect)
}

// BenchmarkSmallFilesClose isolates what a small file costs the writer:
// `cp -r` of the same folders into a mount whose publishing is held back
// (write-back delay of an hour, so nothing competes with the closes), and,
// as the baseline in the same run, into a folder on the local disk that
// holds the mount's cache, each file then fsynced and its folder too (what
// the close promise costs on that disk, without FUSE). The ratio is local
// time / mount time; "cp-files/s" is the rate the close path allows before
// any publishing, the ceiling of BenchmarkSmallFiles on this machine.
func BenchmarkSmallFilesClose(b *testing.B) {
	requireFUSE(b)
	if _, err := exec.LookPath("cp"); err != nil {
		b.Skip("no cp")
	}
	for _, s := range smallSets {
		b.Run(s.name, func(b *testing.B) {
			ts := emulator.NewTestServer(b, emulator.Options{})
			cacheDir := b.TempDir()
			m := mountOn(b, ts, mountOpts{cacheDir: cacheDir, writeBackDelay: time.Hour})
			src := filepath.Join(b.TempDir(), "src")
			if err := os.Mkdir(src, 0o755); err != nil {
				b.Fatal(err)
			}
			for i := range s.files {
				body := randomBytes(int64(9000+i), s.size)
				if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%05d.bin", i)), body, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			var tLocal, tMount time.Duration
			iters := 0
			for b.Loop() {
				iters++
				local := filepath.Join(cacheDir, fmt.Sprintf("local-%d", iters))
				syncDisks()
				tLocal += timed(func() {
					if out, err := exec.Command("cp", "-r", src, local).CombinedOutput(); err != nil {
						b.Fatalf("cp -r: %v: %s", err, out)
					}
					ents, err := os.ReadDir(local)
					if err != nil {
						b.Fatal(err)
					}
					for _, e := range ents {
						syncPath(b, filepath.Join(local, e.Name()))
					}
					syncPath(b, local)
				})
				syncDisks()
				tMount += timed(func() {
					if out, err := exec.Command("cp", "-r", src, m.path(fmt.Sprintf("held-%d", iters))).CombinedOutput(); err != nil {
						b.Fatalf("cp -r: %v: %s", err, out)
					}
				})
			}
			n := float64(s.files * iters)
			b.ReportMetric(n/tMount.Seconds(), "cp-files/s")
			b.ReportMetric(n/tLocal.Seconds(), "local-files/s")
			b.ReportMetric(tLocal.Seconds()/tMount.Seconds(), "ratio")
			b.Logf("%d × %d B: cp -r into the mount (publishing held back) %.0f files/s; local cp -r + fsync of each file %.0f files/s (ratio %.2f)",
				s.files, s.size, n/tMount.Seconds(), n/tLocal.Seconds(), tLocal.Seconds()/tMount.Seconds())
		})
	}
}

// syncPath fsyncs the file or folder at p.
func syncPath(tb testing.TB, p string) {
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
}
