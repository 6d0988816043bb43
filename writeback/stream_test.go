package writeback

import (
	"os"
	"sync/atomic"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
)

// Streaming tests use small blocks: 64 KiB blocks, single put up to 64 KiB,
// so the default threshold (4 blocks) is 256 KiB.
const sbs = 64 << 10

func newStreamEnv(t *testing.T, o emulator.Options) *env {
	return newEnv(t, o, func(c *remote.Config) {
		c.BlockSize, c.SinglePutThreshold = sbs, sbs
		c.Retry = remote.RetryPolicy{MaxAttempts: 5, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	})
}

// openStream opens a queue on the real client (a StreamPublisher).
func (e *env) openStream(cfg Config) *Queue {
	e.t.Helper()
	q, err := New(cfg, e.cl)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { q.Close() })
	return q
}

// writer writes a staging file through a Stream as the mount does.
type writer struct {
	t *testing.T
	f *os.File
	s *Stream
}

func (e *env) newWriter(q *Queue, key, path string) (*writer, Job) {
	e.t.Helper()
	p := e.stage(nil)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { f.Close() })
	j := Job{Key: key, Path: path, Staging: p}
	s := q.Stream(j)
	if s == nil {
		e.t.Fatal("Stream answered nil")
	}
	return &writer{t: e.t, f: f, s: s}, j
}

func (w *writer) writeAt(b []byte, off int64) {
	w.t.Helper()
	w.s.BeginWrite(off, int64(len(b)))
	n, err := w.f.WriteAt(b, off)
	w.s.EndWrite(off, int64(n))
	if err != nil {
		w.t.Fatal(err)
	}
}

// write writes data in sequence from off, 16 KiB at a time.
func (w *writer) write(data []byte, off int64) {
	for i := 0; i < len(data); i += 16 << 10 {
		w.writeAt(data[i:min(i+16<<10, len(data))], off+int64(i))
	}
}

// versions lists the versions of the file at path on the service.
func (e *env) versions(path string) []remote.FileVersion {
	e.t.Helper()
	m, err := e.cl.GetByPath(ctxT(e.t, 10*time.Second), path, remote.GetOptions{IncludeVersions: true})
	if err != nil {
		e.t.Fatalf("get %s: %v", path, err)
	}
	return m.Versions
}

// acked is how many blocks the stream's record lists.
func (s *Stream) acked() int {
	s.mu.Lock()
	j := s.j
	s.mu.Unlock()
	if j == nil {
		return 0
	}
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	return len(j.rec.Acked)
}

// A file written in sequence is uploaded while it is written: blocks reach
// the service before Enqueue, none is sent twice, and the publish makes
// exactly one version with the exact bytes.
func TestStreamUploadsWhileWritten(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{})
	q := e.openStream(e.config())
	data := randBytes(20*sbs + 1234)
	w, j := e.newWriter(q, "k", "s/big.bin")
	w.write(data[:16*sbs], 0)
	eventually(t, "blocks staged while the file is written", func() bool {
		return e.ts.Requests(emulator.OpPutBlock) >= 8
	})
	w.write(data[16*sbs:], 16*sbs)
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("s/big.bin", data)
	if n := e.ts.Requests(emulator.OpPutBlock); n != 21 {
		t.Errorf("%d Put Blocks for 21 blocks", n)
	}
	if v := e.versions("s/big.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if r := e.records(); len(r) != 0 {
		t.Errorf("journal left: %v", r)
	}
}

// A rewrite at offset 0 midway stops streaming: the right bytes are
// published, as one version.
func TestStreamRewriteAtZero(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{})
	q := e.openStream(e.config())
	data := randBytes(12 * sbs)
	w, j := e.newWriter(q, "k", "rw.bin")
	w.write(randBytes(8*sbs), 0)
	eventually(t, "blocks staged", func() bool { return e.ts.Requests(emulator.OpPutBlock) >= 2 })
	w.write(data, 0) // the program starts over
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("rw.bin", data)
	if v := e.versions("rw.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
}

// A crash (the queue closes without Enqueue) while a streamed file is written
// publishes the file as it was left at the next start, resuming the version:
// the blocks already staged are not sent again, and there is one version.
// The same holds after the close, before the commit.
func TestStreamCrashResumes(t *testing.T) {
	for _, closed := range []bool{false, true} {
		name := map[bool]string{false: "while-written", true: "after-close"}[closed]
		t.Run(name, func(t *testing.T) {
			e := newStreamEnv(t, emulator.Options{})
			cfg := e.config()
			cfg.Delay = time.Hour
			q := e.openStream(cfg)
			data := randBytes(10*sbs + 77)
			w, j := e.newWriter(q, "k", "crash.bin")
			w.write(data, 0)
			eventually(t, "blocks journaled", func() bool { return w.s.acked() >= 6 })
			if closed {
				if err := q.Enqueue(j); err != nil {
					t.Fatal(err)
				}
			}
			q.Close()
			// What a crash keeps is what the journal lists (acks are saved
			// every streamSaveEvery and at the stream's end), not what was
			// acked in memory: count the blocks the record names.
			recs, _, err := loadRecords(e.dir)
			if err != nil {
				t.Fatal(err)
			}
			journaled := 0
			for _, r := range recs {
				if r.Job.Key == "k" {
					journaled = len(r.Acked)
				}
			}
			if journaled == 0 {
				t.Fatal("no staged block journaled before the restart")
			}
			staged := e.ts.Requests(emulator.OpPutBlock)
			if e.ts.Requests(emulator.OpPutBlockList) != 0 {
				t.Fatal("committed before the delay")
			}
			cfg.Delay = 0
			q2 := e.openStream(cfg)
			if err := q2.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
				t.Fatal(err)
			}
			e.expectFile("crash.bin", data)
			if v := e.versions("crash.bin"); len(v) != 1 {
				t.Errorf("%d versions, want 1", len(v))
			}
			if resent := e.ts.Requests(emulator.OpPutBlock) - staged; resent > 11-journaled {
				t.Errorf("%d blocks sent after the restart, %d were journaled before (%d sent)", resent, journaled, staged)
			}
		})
	}
}

// A streamed file deleted before it is closed, or within the delay after,
// leaves no file and no record.
func TestStreamDeletedLeavesNothing(t *testing.T) {
	for _, closed := range []bool{false, true} {
		name := map[bool]string{false: "before-close", true: "within-delay"}[closed]
		t.Run(name, func(t *testing.T) {
			e := newStreamEnv(t, emulator.Options{})
			cfg := e.config()
			cfg.Delay = time.Hour
			q := e.openStream(cfg)
			w, j := e.newWriter(q, "k", "gone.bin")
			w.write(randBytes(10*sbs), 0)
			eventually(t, "blocks staged", func() bool { return e.ts.Requests(emulator.OpPutBlock) >= 4 })
			if closed {
				if err := q.Enqueue(j); err != nil {
					t.Fatal(err)
				}
			}
			q.Cancel("k")
			if err := q.Drain(ctxT(t, 30*time.Second)); err != nil {
				t.Fatal(err)
			}
			q.Close()
			if r := e.records(); len(r) != 0 {
				t.Errorf("journal left: %v", r)
			}
			if _, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "gone.bin"); err == nil {
				t.Error("a deleted streamed file was published")
			}
			if n := e.ts.Requests(emulator.OpPutBlockList); n != 0 {
				t.Errorf("%d block lists committed", n)
			}
		})
	}
}

// A streamed file renamed within the delay is published at its new path
// only (its streamed version, registered at the old path, never commits).
func TestStreamRenamedWithinDelay(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{})
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.openStream(cfg)
	data := randBytes(9 * sbs)
	w, j := e.newWriter(q, "k", "tmp.part")
	w.write(data, 0)
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	q.Rename("k", "final.bin")
	if err := q.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("final.bin", data)
	if _, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "tmp.part"); err == nil {
		t.Error("the temp name was published")
	}
}

// An upload URL that expires while the file is written is renewed: the
// stream goes on staging every block before the close.
func TestStreamURLExpiry(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{})
	var skew atomic.Int64
	e.ts.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	e.ts.SetURLTTL(time.Minute)
	q := e.openStream(e.config())
	data := randBytes(24*sbs + 5)
	w, j := e.newWriter(q, "k", "expiry.bin")
	w.write(data[:8*sbs], 0)
	eventually(t, "blocks staged", func() bool { return w.s.acked() >= 1 })
	skew.Store(int64(2 * time.Minute)) // the upload URL has expired
	w.write(data[8*sbs:], 8*sbs)
	eventually(t, "every whole block staged on a renewed URL", func() bool { return w.s.acked() == 24 })
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("expiry.bin", data)
	if n := e.ts.Requests(emulator.OpPutBlock); n < 25 {
		t.Errorf("%d Put Blocks", n)
	}
}

// Faults while streaming (5xx, 429, dropped connections on every kind of
// request): the exact bytes are published, as one version.
func TestStreamFaults(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{Seed: 3})
	q := e.openStream(e.config())
	data := randBytes(24*sbs + 5)
	w, j := e.newWriter(q, "k", "faulty.bin")
	for _, f := range []emulator.Fault{{Status: 500}, {Status: 429}, {Drop: true}} {
		e.ts.FailRate(emulator.OpAny, 0.05, f)
	}
	w.write(data, 0)
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 60*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.ts.FailRate(emulator.OpAny, 0, emulator.Fault{})
	e.expectFile("faulty.bin", data)
	if v := e.versions("faulty.bin"); len(v) != 1 {
		t.Errorf("%d versions, want 1", len(v))
	}
	if e.ts.Requests(emulator.OpPutBlock) == 0 {
		t.Error("nothing staged")
	}
}

// A file edited in place (opened with O_TRUNC) while another client saved a
// version meanwhile is published as a conflict copy, not over theirs.
func TestStreamConflict(t *testing.T) {
	e := newStreamEnv(t, emulator.Options{})
	q := e.openStream(e.config())
	id, v, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "c.bin", []byte("base"))
	if err != nil {
		t.Fatal(err)
	}
	p := e.stage(nil)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	j := Job{Key: "k", Path: "c.bin", FileID: id, BaseVersion: remote.VersionID(v), Staging: p}
	w := &writer{t: t, f: f, s: q.Stream(j)}
	data := randBytes(10 * sbs)
	w.write(data[:6*sbs], 0)
	eventually(t, "blocks staged", func() bool { return e.ts.Requests(emulator.OpPutBlock) >= 1 })
	theirs := []byte("theirs")
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "c.bin", theirs); err != nil {
		t.Fatal(err)
	}
	w.write(data[6*sbs:], 6*sbs)
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 30*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("c.bin", theirs)
	r := e.results()
	if len(r) != 1 || r[0].ConflictPath == "" {
		t.Fatalf("results %+v, want one conflict copy", r)
	}
	e.expectFile(r[0].ConflictPath, data)
}
