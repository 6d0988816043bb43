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
