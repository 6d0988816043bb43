package vfs

import (
	"syscall"
	"testing"
	"time"

	"evofs/remote/emulator"
)

func (e *env) rename(from, to string, flags uint32) error {
	e.t.Helper()
	fd, fn := e.dirOf(from)
	td, tn := e.dirOf(to)
	return e.core.Rename(ctxT(e.t), fd, fn, td, tn, flags)
}

func (e *env) mustRename(from, to string) {
	e.t.Helper()
	if err := e.rename(from, to, 0); err != nil {
		e.t.Fatalf("rename %q → %q: %v", from, to, err)
	}
}

func (e *env) unlink(p string) error {
	e.t.Helper()
	d, n := e.dirOf(p)
	return e.core.Unlink(ctxT(e.t), d, n)
}

func TestRenameUnpublishedMakesNoRequest(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("a.txt", []byte("draft"))
	e.ts.ResetRequests()
	e.mustRename("a.txt", "b.txt")
	if n := e.ts.Requests(emulator.OpAny); n != 0 {
		t.Fatalf("rename of an unpublished file made %d requests", n)
	}
	if _, err := e.node("a.txt"); err != ErrNotExist {
		t.Fatalf("old name: %v", err)
	}
	mustEqual(t, "new name", e.readFile("b.txt"), []byte("draft"))
	e.drain()
	e.remoteAbsent("a.txt")
	e.remoteEqual("b.txt", []byte("draft"))
	if p := e.publishes(); p != 1 {
		t.Fatalf("%d publishes, want 1", p)
	}
}

func TestRenamePublished(t *testing.T) {
	e := newCore(t, coreOpts{})
	data := randomBytes(6, 150_000)
	e.writeFile("a.bin", data)
	e.drain()
	e.ts.ResetRequests()
	e.mustRename("a.bin", "sub/b.bin")
	e.drain()
	e.remoteAbsent("a.bin")
	e.remoteEqual("sub/b.bin", data)
	if n := e.ts.Requests(emulator.OpGetBlob); n != 0 {
		t.Fatalf("rename downloaded %d times (the cache has the bytes)", n)
	}
	if got := join(e.remotePaths()); got != "sub/b.bin" {
		t.Fatalf("service holds %s", got)
	}
	mustEqual(t, "local", e.readFile("sub/b.bin"), data)
}

func TestRenameOverExistingKeepsTargetIdentity(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("new.txt", []byte("new content"))
	e.writeFile("doc.txt", []byte("old content"))
	e.drain()
	_, docID, docV := e.mustRemote("doc.txt")
	e.mustRename("new.txt", "doc.txt")
	mustEqual(t, "local", e.readFile("doc.txt"), []byte("new content"))
	e.drain()
	id, v := e.remoteEqual("doc.txt", []byte("new content"))
	if id != docID || v == docV {
		t.Fatalf("doc.txt is %s@%s, want a new version of %s (was %s)", id, v, docID, docV)
	}
	if vs := e.versions(id); len(vs) != 2 {
		t.Fatalf("versions %v, want 2", vs)
	}
	e.remoteAbsent("new.txt")
	if x := e.core.Xattrs(e.mustNode("doc.txt")); x[XattrFileID] != docID.String() || x[XattrVersionID] != v {
		t.Fatalf("xattrs %v", x)
	}
}

func TestRenameToLocalOnlyNameAndBack(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("f", []byte("content"))
	e.drain()
	_, id, v := e.mustRemote("f")
	e.ts.ResetRequests()
	e.mustRename("f", "f~")
	if got := join(e.names("")); got != "f~" {
		t.Fatalf("root: %s", got)
	}
	e.refresh() // the listing still has f: it must not reappear beside f~
	if got := join(e.names("")); got != "f~" {
		t.Fatalf("root after refresh: %s", got)
	}
	e.mustRename("f~", "f")
	e.drain()
	if p := e.publishes() + e.ts.Requests(emulator.OpDeleteByID); p != 0 {
		t.Fatalf("%d publishes/deletes for a round trip through a local-only name", p)
	}
	if _, gid, gv := e.mustRemote("f"); gid != id || gv != v {
		t.Fatalf("f changed on the service: %s@%s", gid, gv)
	}
	if x := e.core.Xattrs(e.mustNode("f")); x[XattrFileID] != id.String() || x[XattrState] != "published" {
		t.Fatalf("xattrs %v", x)
	}
	mustEqual(t, "local", e.readFile("f"), []byte("content"))
}

func TestVimSavePatternKeepsFileID(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("notes.md", []byte("v1"))
	e.drain()
	_, id, _ := e.mustRemote("notes.md")
	e.mustRename("notes.md", "notes.md~")
	e.writeFile("notes.md", []byte("v2 longer"))
	if err := e.unlink("notes.md~"); err != nil {
		t.Fatal(err)
	}
	e.drain()
	gid, _ := e.remoteEqual("notes.md", []byte("v2 longer"))
	if gid != id {
		t.Fatalf("file id %s, want %s", gid, id)
	}
	if vs := e.versions(id); len(vs) != 2 {
		t.Fatalf("versions %v", vs)
	}
	if got := join(e.remotePaths()); got != "notes.md" {
		t.Fatalf("service holds %s", got)
	}
}

func TestFolderRenameMovesAllFiles(t *testing.T) {
	e := newCore(t, coreOpts{})
	a, b := randomBytes(7, 5000), randomBytes(8, 7000)
	e.writeFile("D/a", a)
	e.writeFile("D/E/b", b)
	e.drain()
	e.writeFile("D/E/c", []byte("unpublished")) // still queued or uploading
	e.writeFile("D/.x.swp", []byte("swap"))     // local only
	e.mustRename("D", "X")
	if got := join(e.names("")); got != "X/" {
		t.Fatalf("root: %s", got)
	}
	e.drain()
	if got := join(e.remotePaths()); got != "X/E/b,X/E/c,X/a" {
		t.Fatalf("service holds %s", got)
	}
	e.remoteEqual("X/a", a)
	e.remoteEqual("X/E/b", b)
	mustEqual(t, "swap file", e.readFile("X/.x.swp"), []byte("swap"))
	mustEqual(t, "X/E/c", e.readFile("X/E/c"), []byte("unpublished"))
}

func TestFolderRenameLimitAndErrors(t *testing.T) {
	e := newCore(t, coreOpts{maxDirRename: 100})
	e.writeFile("D/big", make([]byte, 101))
	e.writeFile("S/small", []byte("s"))
	if err := e.rename("D", "X", 0); err != ErrXDev {
		t.Fatalf("rename above the limit: %v, want EXDEV", err)
	}
	if _, err := e.core.Mkdir(e.mustNode("S"), "Sub"); err != nil {
		t.Fatal(err)
	}
	if err := e.rename("S", "S/Sub/T", 0); err != ErrInvalid {
		t.Fatalf("rename into own subfolder: %v, want EINVAL", err)
	}
	e.writeFile("x", []byte("x"))
	e.writeFile("y", []byte("y"))
	if err := e.rename("x", "y", 1); err != ErrExist {
		t.Fatalf("RENAME_NOREPLACE over a file: %v, want EEXIST", err)
	}
	if err := e.rename("x", "y", 2); err != syscall.ENOTSUP {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	if err := e.rename("nope", "z", 0); err != ErrNotExist {
		t.Fatalf("missing source: %v", err)
	}
	if err := e.rename("x", "S", 0); err != ErrIsDir {
		t.Fatalf("file over folder: %v", err)
	}
	if err := e.rename("S", "y", 0); err != ErrNotDir {
		t.Fatalf("folder over file: %v", err)
	}
	if err := e.rename("S", "D", 0); err != ErrNotEmpty {
		t.Fatalf("folder over non-empty folder: %v", err)
	}
	if err := e.core.Rename(ctxT(t), e.core.Root(), "x", e.mustNode("y"), "z", 0); err != ErrNotDir {
		t.Fatalf("into a file: %v", err)
	}
	e.drain()
	mustEqual(t, "y unchanged", e.readFile("y"), []byte("y"))
	e.remoteEqual("y", []byte("y"))
	e.remoteEqual("x", []byte("x"))
}

func TestRenameWhileOpenForWriting(t *testing.T) {
	e := newCore(t, coreOpts{})
	_, h := e.create("a")
	e.write(h, []byte("first "), 0)
	e.mustRename("a", "b")
	e.write(h, []byte("second"), 6)
	e.closeH(h)
	e.drain()
	e.remoteAbsent("a")
	e.remoteEqual("b", []byte("first second"))
}

func TestRenameSettlesRunningPublish(t *testing.T) {
	e := newCore(t, coreOpts{})
	data := randomBytes(9, 50_000)
	e.ts.FailNext(emulator.OpPutBlob, 1, emulator.Fault{Latency: 500 * time.Millisecond})
	n := e.writeFile("a", data)
	e.waitState(n, "uploading")
	e.mustRename("a", "b")
	e.drain()
	e.remoteAbsent("a")
	e.remoteEqual("b", data)
	if got := join(e.remotePaths()); got != "b" {
		t.Fatalf("service holds %s", got)
	}
}

// A renamed file whose publish at the new name is still queued must not
// reappear at its old name when the listing is merged.
func TestRefreshDuringPendingRenameShowsNoGhost(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("a", []byte("content"))
	e.drain()
	e.mustRename("a", "b")
	e.refresh()
	if got := join(e.names("")); got != "b" {
		t.Fatal("after rename a→b (publish of b queued), Refresh re-inserts the old remote file as a ghost 'a'; root = " + got)
	}
}

// mv a b; mv b a before anything is published must leave a on the service.
func TestRenameAwayAndBackBeforePublish(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("a", []byte("keep me"))
	e.drain()
	e.mustRename("a", "b")
	e.mustRename("b", "a")
	e.drain()
	if _, _, _, err := e.remote("a"); err != nil {
		t.Fatal("rename a→b→a with the publish still queued deletes a on the service (upsert lands on a's file id, then DeleteAfter deletes it): " + err.Error())
	}
	e.remoteEqual("a", []byte("keep me"))
	e.remoteAbsent("b")
}

// Log rotation: mv app.log app.log.1; create app.log. The new app.log must
// survive the deletion of the old identity that follows app.log.1's publish.
func TestLogRotationKeepsNewFile(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("app.log", []byte("old lines\n"))
	e.drain()
	e.mustRename("app.log", "app.log.1")
	_, h := e.create("app.log")
	e.write(h, []byte("new lines\n"), 0)
	if err := h.Fsync(ctxT(t)); err != nil { // publishes app.log first
		t.Fatal(err)
	}
	h.Release()
	e.drain() // then app.log.1, and the deletion of the old identity
	e.remoteEqual("app.log.1", []byte("old lines\n"))
	if _, _, _, err := e.remote("app.log"); err != nil {
		t.Fatal("log rotation (mv f f.1; create f; f published before f.1) loses f on the service: " + err.Error())
	}
	e.remoteEqual("app.log", []byte("new lines\n"))
}

// Edits made while a file sits under a local-only name must survive the
// rename back to its real name (and then be published).
func TestEditWhileParkedSurvivesRenameBack(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("f", []byte("version one"))
	e.drain()
	e.mustRename("f", "f~")
	h := e.open("f~", syscall.O_RDWR)
	e.write(h, []byte("VERSION TWO"), 0)
	e.closeH(h)
	mustEqual(t, "parked", e.readFile("f~"), []byte("VERSION TWO"))
	e.mustRename("f~", "f")
	if got := e.readFile("f"); string(got) != "VERSION TWO" {
		t.Fatalf("edits made under a local-only name are dropped on the rename back (read %q): handOverIO clears dirty for local-only names, then renameFile's dropCleanLocalLocked discards the staging file", got)
	}
	e.drain()
	e.remoteEqual("f", []byte("VERSION TWO"))
}

// A publish taken back by opening the file for writing stays journaled
// until the next close queues it again; if the file was parked under a
// local-only name meanwhile, that close releases the record rather than
// leave it to publish the parked content at the old path on a later mount.
func TestReopenedThenParkedLeavesNoRecord(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("g", []byte("v1")) // queued for an hour
	h := e.open("g", syscall.O_WRONLY)
	if recs := e.journalRecords(); len(recs) != 1 {
		t.Fatalf("journal after reopen: %v, want the queued record kept", recs)
	}
	e.write(h, []byte("v2"), 0)
	e.mustRename("g", "g~")
	e.closeH(h)
	if recs := e.journalRecords(); len(recs) != 0 {
		t.Fatalf("journal after closing the parked file: %v", recs)
	}
	mustEqual(t, "parked content", e.readFile("g~"), []byte("v2"))
}
