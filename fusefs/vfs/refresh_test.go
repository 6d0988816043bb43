package vfs

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func (e *env) put(p string, data []byte) string {
	e.t.Helper()
	_, v, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, p, data)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestRefreshMergesRemoteChanges(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"upd.txt": []byte("v1"), "A/B/del.txt": []byte("gone soon")})
	mustEqual(t, "before", e.readFile("upd.txt"), []byte("v1"))
	e.put("new/created.txt", []byte("hello"))
	v2 := e.put("upd.txt", []byte("version two"))
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "A/B/del.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node("new/created.txt"); err != ErrNotExist {
		t.Fatalf("seen before refresh: %v", err)
	}
	e.refresh()
	mustEqual(t, "created", e.readFile("NEW/created.txt"), []byte("hello"))
	n := e.mustNode("upd.txt")
	mustEqual(t, "updated", e.readFile("upd.txt"), []byte("version two"))
	if a := e.core.Attr(n); a.Size != int64(len("version two")) {
		t.Fatalf("size %d", a.Size)
	}
	if v := e.core.Xattrs(n)[XattrVersionID]; v != v2 {
		t.Fatalf("version %s, want %s", v, v2)
	}
	if _, err := e.node("A/B/del.txt"); err != ErrNotExist {
		t.Fatalf("deleted file: %v", err)
	}
	if got := join(e.names("")); got != "new/,upd.txt" {
		t.Fatalf("root %s (implicit folders of a deleted file are pruned)", got)
	}
	if p := e.publishes(); p != 0 {
		t.Fatalf("%d publishes", p)
	}
}

func TestRefreshKeepsLocalEditsAndConflictCopy(t *testing.T) {
	e := newSeeded(t, coreOpts{delay: time.Hour}, map[string][]byte{"doc.txt": []byte("base")})
	_, id, _ := e.mustRemote("doc.txt")
	h := e.open("doc.txt", syscall.O_RDWR)
	e.write(h, []byte("LOCAL"), 0) // "LOCAL" over "base" → "LOCAL"
	e.put("doc.txt", []byte("theirs, longer"))
	e.refresh() // open writer
	mustEqual(t, "open writer", e.readFile("doc.txt"), []byte("LOCAL"))
	e.closeH(h)
	e.refresh() // queued
	mustEqual(t, "queued", e.readFile("doc.txt"), []byte("LOCAL"))
	e.drain()
	// ours went to a conflict copy; the original keeps theirs
	gid, _ := e.remoteEqual("doc.txt", []byte("theirs, longer"))
	if gid != id {
		t.Fatal("file id changed")
	}
	var conflict string
	for _, p := range e.remotePaths() {
		if strings.HasPrefix(p, "doc (conflict ") && strings.HasSuffix(p, ").txt") {
			conflict = p
		}
	}
	if conflict == "" {
		t.Fatalf("no conflict copy: %v", e.remotePaths())
	}
	e.remoteEqual(conflict, []byte("LOCAL"))
	e.refresh()
	mustEqual(t, "after refresh", e.readFile("doc.txt"), []byte("theirs, longer"))
	mustEqual(t, "conflict copy", e.readFile(conflict), []byte("LOCAL"))
}

// After our edit became a conflict copy, the node's version is unknown until
// the next listing; a read meanwhile must give the service's bytes (or an
// error), never a mix of our size and their bytes.
func TestReadBetweenConflictAndRefresh(t *testing.T) {
	e := newSeeded(t, coreOpts{delay: time.Hour}, map[string][]byte{"doc.txt": []byte("base")})
	h := e.open("doc.txt", syscall.O_RDWR)
	e.write(h, []byte("LOCAL"), 0)
	e.closeH(h)
	e.put("doc.txt", []byte("theirs, longer"))
	e.drain()
	r := e.open("doc.txt", syscall.O_RDONLY)
	got, err := readAll(ctxT(t), r)
	r.Release()
	if err == nil && string(got) != "theirs, longer" && string(got) != "LOCAL" {
		t.Fatalf("read after a conflict publish, before the next listing, gives %q (our size, their bytes, cached under version \"\")", got)
	}
	e.refresh()
	mustEqual(t, "after refresh", e.readFile("doc.txt"), []byte("theirs, longer"))
}

func TestOpenReaderKeepsItsVersion(t *testing.T) {
	v1 := randomBytes(20, 2<<20+5)
	v2 := randomBytes(21, 1<<20+9)
	e := newSeeded(t, coreOpts{}, map[string][]byte{"read-first": v1, "read-later": v1})
	r1 := e.open("read-first", syscall.O_RDONLY)
	buf := make([]byte, 10)
	if _, err := r1.Read(ctxT(t), buf, 0); err != nil {
		t.Fatal(err)
	}
	r2 := e.open("read-later", syscall.O_RDONLY) // first read comes after the change
	e.put("read-first", v2)
	e.put("read-later", v2)
	e.refresh()
	for _, c := range []struct {
		h    *Handle
		name string
	}{{r1, "read-first"}, {r2, "read-later"}} {
		got, err := readAll(ctxT(t), c.h)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		mustEqual(t, c.name+" old handle", got, v1)
		h, mode, err := e.core.Open(ctxT(t), e.mustNode(c.name), syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if !mode.DirectIO || mode.KeepCache {
			t.Errorf("%s: open mode %+v while an older reader is open, want DirectIO", c.name, mode)
		}
		got, err = readAll(ctxT(t), h)
		h.Release()
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, c.name+" new handle", got, v2)
		c.h.Release()
	}
	// all old readers gone: a new open owns the page cache again
	_, mode, err := e.core.Open(ctxT(t), e.mustNode("read-first"), syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if mode.DirectIO {
		t.Errorf("open mode %+v with no older reader", mode)
	}
}

func TestReaderFollowsOwnPublish(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f": []byte("remote v1")})
	r := e.open("f", syscall.O_RDONLY)
	e.writeFile("f", []byte("our v2"))
	e.drain()
	got, err := readAll(ctxT(t), r)
	r.Release()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "reader after our own publish", got, []byte("our v2"))
	_, mode, err := e.core.Open(ctxT(t), e.mustNode("f"), syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if !mode.KeepCache {
		t.Errorf("open after our own publish: %+v, want KeepCache (the kernel's pages hold our bytes)", mode)
	}
}

func TestRemoteDeleteOfLocallyEditedFile(t *testing.T) {
	e := newSeeded(t, coreOpts{delay: time.Hour}, map[string][]byte{"f": []byte("base")})
	h := e.open("f", syscall.O_RDWR)
	e.write(h, []byte("mine"), 0)
	e.closeH(h)
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "f"); err != nil {
		t.Fatal(err)
	}
	e.refresh()
	mustEqual(t, "kept", e.readFile("f"), []byte("mine"))
	e.drain()
	e.remoteEqual("f", []byte("mine")) // published again as a new file
	e.refresh()
	mustEqual(t, "after", e.readFile("f"), []byte("mine"))
}
