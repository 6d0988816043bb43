package vfs

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"evofs/remote/emulator"
)

// The control folder is hidden from the root's listing and reached by
// name; a workspace's own .evofs is shown as it is, and the control folder
// is then .evofs-history.
func TestControlFolderName(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"a.txt": []byte("a")})
	if got := join(e.names("")); got != "a.txt" {
		t.Fatalf("root lists %q", got)
	}
	if n := e.mustNode(".evofs"); !n.IsView() {
		t.Fatal(".evofs is not the control folder")
	}
	if n := e.mustNode(".EVOFS"); !n.IsView() {
		t.Fatal(".EVOFS is not the control folder (names fold)")
	}
	if _, err := e.node(".evofs-history"); !errors.Is(err, ErrNotExist) {
		t.Fatalf(".evofs-history without a collision: %v", err)
	}
	if _, err := e.core.Mkdir(e.core.Root(), ".evofs"); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("mkdir .evofs: %v", err)
	}

	e.ts.PutFile(e.ts.Org, e.ts.Workspace, ".evofs/mine.txt", []byte("mine"))
	e.refresh()
	if got := join(e.names("")); got != ".evofs/,a.txt" {
		t.Fatalf("root lists %q", got)
	}
	if n := e.mustNode(".evofs"); n.IsView() {
		t.Fatal("the workspace's .evofs is hidden by the control folder")
	}
	mustEqual(t, "the workspace's .evofs", e.readFile(".evofs/mine.txt"), []byte("mine"))
	if n := e.mustNode(".evofs-history"); !n.IsView() {
		t.Fatal(".evofs-history is not the control folder")
	}
	if got := join(e.names(".evofs-history/versions")); got != ".evofs/,a.txt/" {
		t.Fatalf("versions lists %q", got)
	}
}

// A file's version list is fetched again only once the tree shows a
// version it does not hold (here: another client's, seen by a listing).
func TestVersionListFreshness(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"a.txt": []byte("1")})
	e.ts.PutFile(e.ts.Org, e.ts.Workspace, "a.txt", []byte("2"))
	e.refresh()
	e.ts.ResetRequests()
	if got := len(e.names(".evofs/versions/a.txt")); got != 2 {
		t.Fatalf("%d versions", got)
	}
	e.names(".evofs/versions/a.txt")
	if n := e.ts.Requests(emulator.OpAny); n != 1 {
		t.Fatalf("two listings made %d requests, want 1", n)
	}
	e.ts.PutFile(e.ts.Org, e.ts.Workspace, "a.txt", []byte("3"))
	if got := len(e.names(".evofs/versions/a.txt")); got != 2 {
		t.Fatalf("before the tree saw it: %d versions, want 2", got)
	}
	e.refresh()
	e.ts.ResetRequests()
	names := e.names(".evofs/versions/a.txt")
	if len(names) != 3 || e.ts.Requests(emulator.OpGetByID) != 1 {
		t.Fatalf("after a listing: %q with %d requests", names, e.ts.Requests(emulator.OpAny))
	}
	for i, want := range []string{"1", "2", "3"} {
		mustEqual(t, names[i], e.readFile(".evofs/versions/a.txt/"+names[i]), []byte(want))
	}
}

// Two deleted files of one path: the newest deletion takes the plain name,
// the older one "NAME (deleted ...).EXT"; a folder restore where one file's
// path is taken on the service restores the others and fails with EEXIST.
func TestTrashNamesAndPartialRestore(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"d/x.csv": []byte("first"), "d/y.csv": []byte("y"), "d/z.csv": []byte("z")})
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "d/x.csv")
	e.ts.PutFile(e.ts.Org, e.ts.Workspace, "d/x.csv", []byte("second"))
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "d/x.csv")
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "d/y.csv")
	e.refresh()
	got := e.names(".evofs/trash/d")
	if len(got) != 3 || got[0] != "x (deleted "+got[0][len("x (deleted "):] || !strings.HasSuffix(got[0], ").csv") || got[1] != "x.csv" || got[2] != "y.csv" {
		t.Fatalf("trash/d lists %q", got)
	}
	mustEqual(t, "newest x", e.readFile(".evofs/trash/d/x.csv"), []byte("second"))
	mustEqual(t, "older x", e.readFile(".evofs/trash/d/"+got[0]), []byte("first"))

	// d/y.csv is taken on the service meanwhile (unseen here)
	e.ts.PutFile(e.ts.Org, e.ts.Workspace, "d/y.csv", []byte("theirs"))
	d := e.mustNode("d") // d/z.csv keeps the folder
	trash := e.mustNode(".evofs/trash")
	err := e.core.Rename(ctxT(t), trash, "d", e.core.Root(), "d", 0)
	if !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("restore onto a folder with files: %v", err)
	}
	if err := e.core.Unlink(ctxT(t), d, "z.csv"); err != nil {
		t.Fatal(err)
	}
	err = e.core.Rename(ctxT(t), trash, "d", e.core.Root(), "d", 0)
	if !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("restore with one path taken: %v", err)
	}
	mustEqual(t, "restored x", e.readFile("d/x.csv"), []byte("second"))
	mustEqual(t, "restored z", e.readFile("d/z.csv"), []byte("z"))
	e.remoteEqual("d/x.csv", []byte("second"))
	e.remoteEqual("d/y.csv", []byte("theirs"))
	// the older x is now the newest deleted file of its path: the plain name
	if got := join(e.names(".evofs/trash/d")); got != "x.csv,y.csv" {
		t.Fatalf("trash/d after a partial restore lists %q", got)
	}
	mustEqual(t, "older x", e.readFile(".evofs/trash/d/x.csv"), []byte("first"))

	// an older deletion's entry goes back to its path too, not to its own name
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "d/x.csv")
	e.refresh()
	got = e.names(".evofs/trash/d")
	if len(got) != 3 || !strings.HasPrefix(got[0], "x (deleted ") {
		t.Fatalf("trash/d lists %q", got)
	}
	td := e.mustNode(".evofs/trash/d")
	if err := e.core.Rename(ctxT(t), td, got[0], e.mustNode("d"), got[0], 0); !errors.Is(err, ErrNotOldPath) {
		t.Fatalf("restore to the entry's own name: %v", err)
	}
	if err := e.core.Rename(ctxT(t), td, got[0], e.mustNode("d"), "x.csv", 0); err != nil {
		t.Fatalf("restore an older deletion: %v", err)
	}
	mustEqual(t, "older x restored", e.readFile("d/x.csv"), []byte("first"))
}

// A service that answers a restore with 303 and the file's metadata (the
// same path) restores it in place, like 204: the trash entry's node (whose
// inode the kernel moves to the new name) becomes the file.
func TestRestoreSeeOther(t *testing.T) {
	e := newSeeded(t, coreOpts{emu: emulator.Options{RestoreSeeOther: true}}, map[string][]byte{"a.txt": []byte("a")})
	if err := e.core.Unlink(ctxT(t), e.core.Root(), "a.txt"); err != nil {
		t.Fatal(err)
	}
	if got := join(e.names(".evofs/trash")); got != "a.txt" {
		t.Fatalf("trash lists %q", got)
	}
	entry := e.mustNode(".evofs/trash/a.txt")
	if err := e.core.Rename(ctxT(t), e.mustNode(".evofs/trash"), "a.txt", e.core.Root(), "a.txt", 0); err != nil {
		t.Fatal(err)
	}
	// the kernel moved the entry's inode to a.txt: the node must be the same
	if n := e.mustNode("a.txt"); n != entry || n.IsView() {
		t.Fatalf("a.txt is node %d (view %v), want the trash entry's node %d turned into a file", n.Ino(), n.IsView(), entry.Ino())
	}
	mustEqual(t, "restored", e.readFile("a.txt"), []byte("a"))
	e.remoteEqual("a.txt", []byte("a"))
	if got := join(e.names(".evofs/trash")); got != "" {
		t.Fatalf("trash lists %q after the restore", got)
	}
}

// The trash follows the tree's listings: a deletion by another client comes
// with a delta poll, and a file another client restored leaves the trash
// once a listing shows it live (a restore changes no modified_at: a delta
// poll sees it only within its overlap window, the hourly full listing always).
func TestTrashFollowsListings(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"a.txt": []byte("a"), "b.txt": []byte("b")})
	_, id, _ := e.mustRemote("a.txt")
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "a.txt")
	if got := join(e.names(".evofs/trash")); got != "a.txt" {
		t.Fatalf("trash lists %q", got)
	}
	e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "b.txt")
	if err := e.core.Poll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.ts.ResetRequests()
	if got := join(e.names(".evofs/trash")); got != "a.txt,b.txt" {
		t.Fatalf("trash after a poll lists %q", got)
	}
	if n := e.ts.Requests(emulator.OpAny); n != 0 {
		t.Fatalf("%d requests", n)
	}
	if _, err := e.client.Restore(ctxT(t), id); err != nil { // another client
		t.Fatal(err)
	}
	e.refresh()
	if got := join(e.names(".evofs/trash")); got != "b.txt" {
		t.Fatalf("trash after a full listing lists %q", got)
	}
	mustEqual(t, "a.txt", e.readFile("a.txt"), []byte("a"))
}
