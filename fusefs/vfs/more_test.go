package vfs

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

// The usual atomic save: write a temp file, rename it over the original.
func TestAtomicSaveViaTempRename(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Hour} {
		e := newSeeded(t, coreOpts{delay: delay}, map[string][]byte{"doc.txt": []byte("v1")})
		_, id, _ := e.mustRemote("doc.txt")
		for i, content := range []string{"v2 via temp", "v3 via temp, longer"} {
			e.writeFile(".doc.txt.tmp123", []byte(content))
			e.mustRename(".doc.txt.tmp123", "doc.txt")
			mustEqual(t, "local", e.readFile("doc.txt"), []byte(content))
			if i == 0 && delay == 0 {
				e.drain()
			}
		}
		e.drain()
		gid, _ := e.remoteEqual("doc.txt", []byte("v3 via temp, longer"))
		if gid != id {
			t.Fatalf("delay %v: file id changed %s → %s", delay, id, gid)
		}
		if got := join(e.remotePaths()); got != "doc.txt" {
			t.Fatalf("delay %v: service holds %s", delay, got)
		}
		want := 3
		if delay > 0 {
			want = 2 // the two saves coalesced
		}
		if vs := e.versions(id); len(vs) != want {
			t.Fatalf("delay %v: versions %v, want %d", delay, vs, want)
		}
	}
}

func TestRenameOverFileWithOpenReader(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("dst", []byte("old dst"))
	e.writeFile("src", []byte("new"))
	e.drain()
	r := e.open("dst", syscall.O_RDONLY)
	e.mustRename("src", "dst")
	e.drain()
	got, err := readAll(ctxT(t), r)
	r.Release()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "reader of the replaced file", got, []byte("old dst"))
	mustEqual(t, "new open", e.readFile("dst"), []byte("new"))
	e.remoteEqual("dst", []byte("new"))
}

func TestOpenReaderSurvivesRemoteDelete(t *testing.T) {
	data := randomBytes(30, 100_000)
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f": data})
	r := e.open("f", syscall.O_RDONLY)
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "f"); err != nil {
		t.Fatal(err)
	}
	e.refresh()
	if _, err := e.node("f"); err != ErrNotExist {
		t.Fatalf("lookup: %v", err)
	}
	got, err := readAll(ctxT(t), r)
	r.Release()
	if err != nil {
		t.Fatalf("read of a file deleted remotely while open: %v", err)
	}
	mustEqual(t, "open reader", got, data)
}

func TestFailedPublishIsVisibleAndRecovers(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.ts.FailNext(emulator.OpUpsertByPath, 1, emulator.Fault{Status: 403})
	n := e.writeFile("f", []byte("first"))
	e.waitState(n, string(writeback.StateFailed))
	ctx, cancel := timeoutCtx(t, 20*time.Second)
	defer cancel()
	var je *writeback.JobError
	if err := e.core.Drain(ctx); !errors.As(err, &je) && !errors.Is(err, remote.ErrForbidden) {
		t.Fatalf("drain with a failed job: %v", err)
	}
	mustEqual(t, "still readable", e.readFile("f"), []byte("first"))
	h := e.open("f", syscall.O_WRONLY|syscall.O_TRUNC)
	e.write(h, []byte("second"), 0)
	if err := h.Fsync(ctxT(t)); err != nil {
		t.Fatalf("fsync after the failure: %v", err)
	}
	h.Release()
	e.remoteEqual("f", []byte("second"))
	e.waitState(n, "published")
}

func TestSyncCloseReportsFailure(t *testing.T) {
	e := newCore(t, coreOpts{syncClose: true})
	e.ts.FailNext(emulator.OpUpsertByPath, 1, emulator.Fault{Status: 403})
	_, h := e.create("f")
	e.write(h, []byte("x"), 0)
	if err := h.Flush(ctxT(t)); err == nil {
		t.Fatal("close succeeded though the publish failed")
	}
	e.write(h, []byte("y"), 1) // the data is still ours: write again, close publishes
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.Release()
	e.remoteEqual("f", []byte("xy"))
}

func TestFolderRenameWithOpenWriter(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("D/f", []byte("published"))
	e.drain()
	h := e.open("D/f", syscall.O_RDWR)
	e.mustRename("D", "X")
	e.write(h, []byte("P"), 0)
	e.closeH(h)
	e.drain()
	e.remoteEqual("X/f", []byte("Published"))
	if got := join(e.remotePaths()); got != "X/f" {
		t.Fatalf("service holds %s", got)
	}
}

func TestRefreshDuringPendingFolderRenameShowsNoGhost(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("D/a", []byte("a"))
	e.drain()
	e.mustRename("D", "X")
	e.refresh()
	if got := join(e.names("")); got != "X/" {
		t.Fatal("after a folder rename D→X (publishes queued), Refresh re-inserts D/a from the listing; root = " + got)
	}
}
