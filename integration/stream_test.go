package integration

// Streaming publish: a file written in sequence is uploaded while it is
// written (8 MiB blocks; streaming starts past 32 MiB).

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
)

const streamBlock = 8 << 20

// versionsOf lists the versions of the file at p on the service.
func versionsOf(t testing.TB, ts *emulator.TestServer, p string) []remote.FileVersion {
	t.Helper()
	c := benchClient(t, ts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.GetByPath(ctx, p, remote.GetOptions{IncludeVersions: true})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return m.Versions
}

// writeSeq writes data to f in sequence from off, 1 MiB at a time.
func writeSeq(t testing.TB, f *os.File, data []byte, off int64) {
	t.Helper()
	for i := 0; i < len(data); i += mib {
		if _, err := f.WriteAt(data[i:min(i+mib, len(data))], off+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitPutBlocks waits until the service has staged at least n blocks.
func waitPutBlocks(t testing.TB, ts *emulator.TestServer, n int) {
	t.Helper()
	if !eventually(t, 60*time.Second, func() bool { return ts.Requests(emulator.OpPutBlock) >= n }) {
		t.Fatalf("only %d blocks staged, want %d", ts.Requests(emulator.OpPutBlock), n)
	}
}

// journaledBlocks is the most staged blocks a record in the journal dir lists.
func journaledBlocks(t testing.TB, dir string) int {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	most := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // replaced meanwhile
		}
		var r struct {
			Acked []string `json:"acked"`
		}
		if json.Unmarshal(b, &r) == nil {
			most = max(most, len(r.Acked))
		}
	}
	return most
}

// kill -9 of a real `evofs mount` while a streamed file is being written:
// the remount publishes the file as it was left (exact bytes), as one
// version, reusing the blocks staged before the kill.
func TestProcessKill9WhileStreaming(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount(streaming)", ts, mp, cacheDir)
	data := randomBytes(61, 6*streamBlock+12345)
	f, err := os.Create(filepath.Join(mp, "stream.bin"))
	if err != nil {
		t.Fatal(err)
	}
	writeSeq(t, f, data, 0)
	// Blocks reach the service while the file is open, and the journal.
	var acked int
	if !eventually(t, 60*time.Second, func() bool {
		acked = journaledBlocks(t, filepath.Join(cacheDir, "journal"))
		return acked >= 3
	}) {
		t.Fatalf("only %d blocks journaled while the file was written", acked)
	}
	p.killOnly()
	f.Close() // ENOTCONN: the daemon is gone
	p.detachDead()
	staged := ts.Requests(emulator.OpPutBlock)
	mustNotBeServed(t, ts, "stream.bin")

	p = mountEvofs(t, "mount(after kill)", ts, mp, cacheDir, "--write-back-delay", "0s")
	waitServed(t, ts, "stream.bin", data, 60*time.Second)
	if v := versionsOf(t, ts, "stream.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if sent := ts.Requests(emulator.OpPutBlock) - staged; sent > 7-acked {
		t.Errorf("%d blocks sent after the remount; %d were journaled before the kill", sent, acked)
	}
	if !eventually(t, 10*time.Second, func() bool { return umount(mp, false) == nil }) {
		t.Fatalf("umount %s kept failing", mp)
	}
	p.expectCleanExit(60 * time.Second)
}

// kill -9 after the close of a streamed file but before its commit (a long
// write-back delay): every block was staged meanwhile, and the remount only
// commits the block list: exact bytes, one version, no block sent again.
func TestProcessKill9StreamedBeforeCommit(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount(streamed)", ts, mp, cacheDir, "--write-back-delay", "1h")
	data := randomBytes(62, 5*streamBlock+777)
	writeIn(t, mp, "closed.bin", data)
	// Every block, the tail too, is staged during the delay (status counts
	// a block as uploaded once it is journaled).
	if !eventually(t, 60*time.Second, func() bool {
		j, ok := jobFor(statusJSON(t, mp), "closed.bin")
		return ok && j.UploadedBytes == int64(len(data))
	}) {
		t.Fatalf("the streamed file was not staged whole: %+v", statusJSON(t, mp))
	}
	p.kill9()
	mustNotBeServed(t, ts, "closed.bin")
	if n := ts.Requests(emulator.OpPutBlockList); n != 0 {
		t.Fatalf("%d block lists committed before the delay", n)
	}

	staged := ts.Requests(emulator.OpPutBlock)
	p = mountEvofs(t, "mount(after kill)", ts, mp, cacheDir, "--write-back-delay", "0s")
	waitServed(t, ts, "closed.bin", data, 60*time.Second)
	if v := versionsOf(t, ts, "closed.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if sent := ts.Requests(emulator.OpPutBlock) - staged; sent != 0 {
		t.Errorf("%d blocks sent again after the remount", sent)
	}
	if !eventually(t, 10*time.Second, func() bool { return umount(mp, false) == nil }) {
		t.Fatalf("umount %s kept failing", mp)
	}
	p.expectCleanExit(60 * time.Second)
}

// A streamed file rewritten at offset 0 midway (after blocks were staged)
// publishes the bytes it ends with, as one version.
func TestStreamRewrittenMidway(t *testing.T) {
	m := mountT(t, mountOpts{})
	data := randomBytes(63, 7*streamBlock+99)
	f, err := os.Create(m.path("rewrite.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeSeq(t, f, randomBytes(64, 6*streamBlock), 0)
	waitPutBlocks(t, m.ts, 2)
	writeSeq(t, f, data, 0) // starts over
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("rewrite.bin", data)
	if v := versionsOf(t, m.ts, "rewrite.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if !strings.Contains(m.log.String(), "streaming stopped") {
		t.Error("no debug line says why streaming stopped")
	}
}

// A streamed file deleted before it is closed leaves no version.
func TestStreamDeletedBeforeClose(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir})
	f, err := os.Create(m.path("doomed.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeSeq(t, f, randomBytes(65, 6*streamBlock), 0)
	waitPutBlocks(t, m.ts, 2)
	if err := os.Remove(m.path("doomed.bin")); err != nil {
		t.Fatal(err)
	}
	writeSeq(t, f, randomBytes(66, streamBlock), 6*streamBlock)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.drain()
	if _, _, _, err := m.remoteFile("doomed.bin"); err == nil {
		t.Fatal("a file deleted before its close was published")
	}
	if n := m.ts.Requests(emulator.OpPutBlockList); n != 0 {
		t.Errorf("%d block lists committed", n)
	}
	m.unmount()
	if ents, _ := os.ReadDir(filepath.Join(cacheDir, "journal")); len(ents) != 0 {
		t.Errorf("journal keeps %d records a remount would publish", len(ents))
	}
}

// A file created, then emptied with ftruncate by its writer (a pattern of
// some programs instead of O_TRUNC) streams as well.
func TestStreamAfterTruncateToZero(t *testing.T) {
	m := mountT(t, mountOpts{})
	f, err := os.OpenFile(m.path("ftrunc.bin"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(69, 6*streamBlock+3)
	writeSeq(t, f, data, 0)
	waitPutBlocks(t, m.ts, 2) // while the file is still open
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("ftrunc.bin", data)
}

// A truncate or a second writer midway stops streaming (a debug line says
// why); the file publishes the bytes it ends with, as one version.
func TestStreamBrokenMidway(t *testing.T) {
	for _, tc := range []struct {
		name, why  string
		oneVersion bool // else the second writer's close publishes too
		act        func(t *testing.T, m *testMount, f *os.File)
	}{
		{"truncate", "truncated", true, func(t *testing.T, m *testMount, f *os.File) {
			if err := f.Truncate(3 * streamBlock); err != nil {
				t.Fatal(err)
			}
		}},
		{"second-writer", "opened again for writing", false, func(t *testing.T, m *testMount, f *os.File) {
			g, err := os.OpenFile(m.path("broken.bin"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.WriteAt([]byte("second writer"), 5); err != nil {
				t.Fatal(err)
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mountT(t, mountOpts{})
			first := randomBytes(67, 6*streamBlock)
			f, err := os.Create(m.path("broken.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			writeSeq(t, f, first, 0)
			waitPutBlocks(t, m.ts, 2)
			tc.act(t, m, f)
			got, err := os.ReadFile(m.path("broken.bin"))
			if err != nil {
				t.Fatal(err)
			}
			rest := randomBytes(68, 2*streamBlock)
			writeSeq(t, f, rest, int64(len(got)))
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			want := append(got, rest...)
			m.waitRemote("broken.bin", want)
			if v := versionsOf(t, m.ts, "broken.bin"); tc.oneVersion && len(v) != 1 {
				t.Errorf("%d versions, want 1", len(v))
			}
			if log := grepLines(m.log.String(), "streaming stopped") + "\n"; !strings.Contains(log, "why=\""+tc.why+"\"") && !strings.Contains(log, "why="+tc.why+"\n") {
				t.Errorf("no debug line says streaming stopped because %q: %s", tc.why, grepLines(m.log.String(), "stream"))
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A streamed temp file closed, then renamed within the write-back delay
// (the save pattern of many programs) never becomes a version: only the
// final name is committed, once.
func TestStreamedTempRenamedWithinDelay(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: time.Hour})
	data := randomBytes(70, 5*streamBlock+11)
	writeFile(t, m.path("report.tmp"), data)
	waitPutBlocks(t, m.ts, 2) // streamed while written
	if err := os.Rename(m.path("report.tmp"), m.path("report.bin")); err != nil {
		t.Fatal(err)
	}
	// The kernel releases the writer's handle after close returns, maybe
	// after the rename: the last release queues the file under its new name.
	if !eventually(t, 20*time.Second, func() bool {
		for _, j := range m.core.Status().Jobs {
			if j.Path == "report.bin" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("report.bin never queued: %+v", m.core.Status().Jobs)
	}
	m.drain()
	m.waitRemote("report.bin", data)
	if n := m.ts.Requests(emulator.OpPutBlockList); n != 1 {
		t.Errorf("%d block lists committed, want 1 (the temp name never commits)", n)
	}
	if _, _, _, err := m.remoteFile("report.tmp"); err == nil {
		t.Error("the temp name is on the service")
	}
}

// Through a real mount: Put Blocks failing (500, dropped connections) and
// the upload URL expiring while a streamed file is written; the exact
// bytes are published, as one version.
func TestStreamFaultsAndExpiryThroughMount(t *testing.T) {
	m := mountT(t, mountOpts{emu: emulator.Options{Seed: 11}})
	var skew atomic.Int64
	m.ts.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	m.ts.SetURLTTL(time.Minute)
	m.ts.FailRate(emulator.OpPutBlock, 0.15, emulator.Fault{Status: 500})
	m.ts.FailRate(emulator.OpPutBlock, 0.05, emulator.Fault{Drop: true})
	data := randomBytes(71, 9*streamBlock+5)
	f, err := os.Create(m.path("faulty.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeSeq(t, f, data[:5*streamBlock], 0)
	waitPutBlocks(t, m.ts, 2)
	skew.Store(int64(2 * time.Minute)) // every upload URL handed out so far has expired
	writeSeq(t, f, data[5*streamBlock:], 5*streamBlock)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("faulty.bin", data)
	if v := versionsOf(t, m.ts, "faulty.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if !strings.Contains(m.log.String(), "pre-signed URL renewed") {
		t.Error("the upload URL was never renewed")
	}
}
