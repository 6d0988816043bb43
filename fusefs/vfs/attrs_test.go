package vfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"evofs/fusefs/meta"
)

// restart stops e's core and starts a new one on the same cache folder and service.
func (e *env) restart() *env {
	e.t.Helper()
	e.close()
	return newCore(e.t, coreOpts{ts: e.ts, dir: e.dir})
}

func u32(v uint32) *uint32 { return &v }

func TestTimesAndModeSurviveRestart(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("bin/run.sh", []byte("#!/bin/sh\necho hi\n"))
	e.drain()
	mt := time.Unix(1_600_000_000, 123456789)
	at := time.Unix(1_600_000_100, 987654321)
	n := e.mustNode("bin/run.sh")
	if err := e.core.Setattr(n, SetAttr{Mode: u32(0o4755), Atime: &at, Mtime: &mt}, Caller{UID: 1000, GID: 1000}); err != nil {
		t.Fatal(err)
	}
	a := e.core.Attr(n)
	if a.Mode != syscall.S_IFREG|0o4755 || !a.Mtime.Equal(mt) || !a.Atime.Equal(at) {
		t.Fatalf("after setattr: mode %o mtime %v atime %v", a.Mode, a.Mtime, a.Atime)
	}
	if err := e.core.Setattr(e.mustNode("bin"), SetAttr{Mode: u32(0o700)}, Caller{UID: 1000}); err != nil {
		t.Fatal(err)
	}
	e = e.restart()
	a = e.core.Attr(e.mustNode("bin/run.sh"))
	if a.Mode != syscall.S_IFREG|0o4755 || a.Mtime.UnixNano() != mt.UnixNano() || a.Atime.UnixNano() != at.UnixNano() {
		t.Fatalf("after restart: mode %o mtime %v atime %v", a.Mode, a.Mtime, a.Atime)
	}
	if d := e.core.Attr(e.mustNode("bin")); d.Mode != syscall.S_IFDIR|0o700 {
		t.Fatalf("folder mode after restart %o", d.Mode)
	}
}

func TestEditKeepsModeAndMovesMtime(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("x.sh", []byte("one"))
	e.drain()
	n := e.mustNode("x.sh")
	old := time.Unix(1_500_000_000, 0)
	if err := e.core.Setattr(n, SetAttr{Mode: u32(0o750), Mtime: &old}, Caller{}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	e.writeFile("x.sh", []byte("two"))
	e.drain()
	a := e.core.Attr(n)
	if a.Mode != syscall.S_IFREG|0o750 || a.Mtime.Before(before) || a.Ctime.Before(before) {
		t.Fatalf("after an edit: mode %o mtime %v ctime %v (edit at %v)", a.Mode, a.Mtime, a.Ctime, before)
	}
	want := a.Mtime
	e = e.restart()
	a = e.core.Attr(e.mustNode("x.sh"))
	if a.Mode != syscall.S_IFREG|0o750 || !a.Mtime.Equal(want) {
		t.Fatalf("after restart: mode %o mtime %v, want the edit's %v", a.Mode, a.Mtime, want)
	}
}

func TestRemoteVersionTakesItsModifiedAt(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("f", []byte("ours"))
	e.drain()
	n := e.mustNode("f")
	set := time.Unix(1_400_000_000, 5)
	if err := e.core.Setattr(n, SetAttr{Mode: u32(0o600), Mtime: &set}, Caller{}); err != nil {
		t.Fatal(err)
	}
	e.put("f", []byte("theirs"))
	e.refresh()
	a := e.core.Attr(n)
	if a.Mtime.Equal(set) || time.Since(a.Mtime) > time.Minute {
		t.Fatalf("mtime %v after another client's version, want its modified_at", a.Mtime)
	}
	if a.Mode != syscall.S_IFREG|0o600 {
		t.Fatalf("mode %o after a remote version, want 0600 kept", a.Mode)
	}
	want := a.Mtime
	e = e.restart()
	if got := e.core.Attr(e.mustNode("f")).Mtime; !got.Equal(want) {
		t.Fatalf("after restart mtime %v, want %v (the set time must not come back)", got, want)
	}
}

func TestMetaFollowsRenames(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("D/a", []byte("a"))
	e.writeFile("b", []byte("b"))
	e.drain()
	c := Caller{UID: 0}
	e.core.Setattr(e.mustNode("D/a"), SetAttr{Mode: u32(0o711)}, c)
	e.core.Setattr(e.mustNode("b"), SetAttr{Mode: u32(0o755)}, c)
	root := e.core.Root()
	if err := e.core.Rename(ctxT(t), root, "D", root, "E", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.core.Rename(ctxT(t), root, "b", e.mustNode("E"), "b2", 0); err != nil {
		t.Fatal(err)
	}
	e.drain()
	e = e.restart()
	if m := e.core.Attr(e.mustNode("E/a")).Mode; m != syscall.S_IFREG|0o711 {
		t.Fatalf("E/a mode %o after a folder rename", m)
	}
	if m := e.core.Attr(e.mustNode("E/b2")).Mode; m != syscall.S_IFREG|0o755 {
		t.Fatalf("E/b2 mode %o after a file rename", m)
	}
	if _, ok := e.core.meta.Get("D/a"); ok {
		t.Fatal("the old path kept its record")
	}
}

func TestRemoteDeleteDropsRecord(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("gone", []byte("x"))
	e.writeFile("later", []byte("y"))
	e.drain()
	e.core.Setattr(e.mustNode("gone"), SetAttr{Mode: u32(0o700)}, Caller{})
	e.core.Setattr(e.mustNode("later"), SetAttr{Mode: u32(0o700)}, Caller{})
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "gone"); err != nil {
		t.Fatal(err)
	}
	e.refresh()
	if _, ok := e.core.meta.Get("gone"); ok {
		t.Fatal("record kept after the file was deleted on the service")
	}
	// deleted while unmounted: the next start drops it
	e.close()
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "later"); err != nil {
		t.Fatal(err)
	}
	e = newCore(t, coreOpts{ts: e.ts, dir: e.dir})
	if _, ok := e.core.meta.Get("later"); ok {
		t.Fatal("record kept after the file was deleted while unmounted")
	}
	// a new file of that name starts with the defaults
	e.put("later", []byte("new"))
	e.refresh()
	if m := e.core.Attr(e.mustNode("later")).Mode; m != syscall.S_IFREG|0o644 {
		t.Fatalf("a new file inherited a deleted one's mode: %o", m)
	}
}

func TestLocalNodesSurviveRestartAndStayLocal(t *testing.T) {
	e := newCore(t, coreOpts{})
	root := e.core.Root()
	d, _ := e.core.Mkdir(root, "d")
	if _, err := e.core.Symlink(d, "link", "../target/x", NewAttr{UID: 1000, GID: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.core.Mknod(root, "fifo", meta.KindFIFO, 0, NewAttr{Mode: 0o600, UID: 1000, GID: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.core.Symlink(root, "fifo", "x", NewAttr{}); err != ErrExist {
		t.Fatalf("symlink over an existing name: %v", err)
	}
	e.drain()
	e = e.restart()
	l := e.mustNode("d/link")
	if got, err := e.core.Readlink(l); err != nil || got != "../target/x" {
		t.Fatalf("readlink after restart: %q %v", got, err)
	}
	if a := e.core.Attr(l); a.Mode != syscall.S_IFLNK|0o777 || a.Size != int64(len("../target/x")) {
		t.Fatalf("symlink attr %+v", a)
	}
	if a := e.core.Attr(e.mustNode("fifo")); a.Mode != syscall.S_IFIFO|0o600 {
		t.Fatalf("fifo mode %o", a.Mode)
	}
	if st := e.core.Xattrs(l)[XattrState]; st != "local" {
		t.Fatalf("state %q, want local", st)
	}
	if p := e.remotePaths(); len(p) != 0 {
		t.Fatalf("local-only nodes reached the service: %v", p)
	}
	// rename and unlink follow
	if err := e.core.Rename(ctxT(t), e.mustNode("d"), "link", e.core.Root(), "link2", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.core.Unlink(ctxT(t), e.core.Root(), "fifo"); err != nil {
		t.Fatal(err)
	}
	e = e.restart()
	if _, err := e.node("fifo"); err != ErrNotExist {
		t.Fatalf("unlinked fifo after restart: %v", err)
	}
	if got, _ := e.core.Readlink(e.mustNode("link2")); got != "../target/x" {
		t.Fatalf("renamed symlink after restart: %q", got)
	}
}

func TestOwners(t *testing.T) {
	e := newCore(t, coreOpts{})
	n, h, _, err := e.core.CreateAs(ctxT(t), e.core.Root(), "mine", syscall.O_WRONLY|syscall.O_CREAT, NewAttr{Mode: 0o640, UID: 1234, GID: 99})
	if err != nil {
		t.Fatal(err)
	}
	e.closeH(h)
	if a := e.core.Attr(n); a.UID != 1234 || a.GID != 99 || a.Mode != syscall.S_IFREG|0o640 {
		t.Fatalf("new file %d:%d %o", a.UID, a.GID, a.Mode)
	}
	if err := e.core.Setattr(n, SetAttr{UID: u32(1)}, Caller{UID: 1234, GID: 99}); err != syscall.EPERM {
		t.Fatalf("non-root chown: %v, want EPERM", err)
	}
	if err := e.core.Setattr(n, SetAttr{GID: u32(5)}, Caller{UID: 1234, GID: 99}); err != syscall.EPERM {
		t.Fatalf("non-root chgrp to another group: %v, want EPERM", err)
	}
	if err := e.core.Setattr(n, SetAttr{UID: u32(1234)}, Caller{UID: 1234, GID: 99}); err != nil {
		t.Fatalf("chown to oneself: %v", err)
	}
	if err := e.core.Setattr(n, SetAttr{UID: u32(7), GID: u32(8)}, Caller{UID: 0}); err != nil {
		t.Fatal(err)
	}
	e.drain()
	e = e.restart()
	if a := e.core.Attr(e.mustNode("mine")); a.UID != 7 || a.GID != 8 {
		t.Fatalf("owner after restart %d:%d", a.UID, a.GID)
	}
	// what has no stored owner belongs to Config.UID/GID
	e.put("theirs", []byte("x"))
	e.refresh()
	if a := e.core.Attr(e.mustNode("theirs")); a.UID != 1000 || a.GID != 1000 {
		t.Fatalf("default owner %d:%d", a.UID, a.GID)
	}
}

func TestNlink(t *testing.T) {
	e := newCore(t, coreOpts{})
	root := e.core.Root()
	d, _ := e.core.Mkdir(root, "D")
	e.core.Mkdir(d, "a")
	e.core.Mkdir(d, "b")
	e.writeFile("D/f", []byte("x"))
	if got := e.core.Attr(d).Nlink; got != 4 {
		t.Fatalf("folder with two subfolders: nlink %d, want 4", got)
	}
	n := e.mustNode("D/f")
	h := e.open("D/f", syscall.O_RDONLY)
	if err := e.core.Unlink(ctxT(t), d, "f"); err != nil {
		t.Fatal(err)
	}
	if got := e.core.Attr(n).Nlink; got != 0 {
		t.Fatalf("open file after unlink: nlink %d", got)
	}
	h.Release()
}

func TestNameAndPathTooLong(t *testing.T) {
	e := newCore(t, coreOpts{})
	root := e.core.Root()
	if _, err := e.core.Lookup(root, strings.Repeat("x", 300)); err != syscall.ENAMETOOLONG {
		t.Fatalf("lookup of a 300-byte name: %v", err)
	}
	d := root
	for i := 0; i < 17; i++ {
		var err error
		if d, err = e.core.Mkdir(d, strings.Repeat("d", 250)); err != nil {
			if err != syscall.ENAMETOOLONG || i < 16 {
				t.Fatalf("mkdir at depth %d: %v", i, err)
			}
			return
		}
	}
	t.Fatal("a path over 4096 bytes was accepted")
}

func TestDamagedStoreStillStarts(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("a", []byte("a"))
	e.writeFile("b", []byte("b"))
	e.drain()
	e.core.Setattr(e.mustNode("a"), SetAttr{Mode: u32(0o700)}, Caller{})
	e.core.Setattr(e.mustNode("b"), SetAttr{Mode: u32(0o711)}, Caller{})
	e.close()
	p := filepath.Join(e.dir, "data", "meta", "meta.log")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, b[:len(b)-3], 0o600) // a torn last record
	e = newCore(t, coreOpts{ts: e.ts, dir: e.dir})
	if m := e.core.Attr(e.mustNode("a")).Mode; m != syscall.S_IFREG|0o700 {
		t.Fatalf("a: %o", m)
	}
	if !strings.Contains(e.log.String(), "damaged") {
		t.Fatal("the damage was not reported")
	}
}

func TestConflictCopyKeepsMode(t *testing.T) {
	e := newSeeded(t, coreOpts{delay: time.Hour}, map[string][]byte{"tool.sh": []byte("base")})
	n := e.mustNode("tool.sh")
	if err := e.core.Setattr(n, SetAttr{Mode: u32(0o755)}, Caller{}); err != nil {
		t.Fatal(err)
	}
	h := e.open("tool.sh", syscall.O_RDWR)
	e.write(h, []byte("LOCAL"), 0)
	e.put("tool.sh", []byte("theirs"))
	e.closeH(h)
	e.drain()
	e.refresh()
	var conflict string
	for _, p := range e.remotePaths() {
		if strings.HasPrefix(p, "tool (conflict ") {
			conflict = p
		}
	}
	if conflict == "" {
		t.Fatalf("no conflict copy: %v", e.remotePaths())
	}
	if m := e.core.Attr(e.mustNode(conflict)).Mode; m != syscall.S_IFREG|0o755 {
		t.Fatalf("conflict copy mode %o, want its original's 0755", m)
	}
}

func TestSetgidFolderGivesItsGroup(t *testing.T) {
	e := newCore(t, coreOpts{})
	d, err := e.core.MkdirAs(e.core.Root(), "team", NewAttr{Mode: 0o2775, UID: 1000, GID: 500})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := e.core.MkdirAs(d, "sub", NewAttr{Mode: 0o755, UID: 2000, GID: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.core.Attr(sub); a.GID != 500 || a.UID != 2000 || a.Mode != syscall.S_IFDIR|0o2755 {
		t.Fatalf("folder in a setgid folder: %d:%d %o", a.UID, a.GID, a.Mode)
	}
	n, h, _, err := e.core.CreateAs(ctxT(t), sub, "f", syscall.O_WRONLY|syscall.O_CREAT, NewAttr{Mode: 0o644, UID: 2000, GID: 2000})
	if err != nil {
		t.Fatal(err)
	}
	e.closeH(h)
	if a := e.core.Attr(n); a.GID != 500 || a.Mode != syscall.S_IFREG|0o644 {
		t.Fatalf("file in a setgid folder: gid %d mode %o", a.GID, a.Mode)
	}
}

func TestLocalNodeUnderReplacedFolderGoes(t *testing.T) {
	e := newCore(t, coreOpts{})
	d, _ := e.core.Mkdir(e.core.Root(), "a")
	if _, err := e.core.Symlink(d, "l", "x", NewAttr{}); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.put("a", []byte("now a file"))
	e = newCore(t, coreOpts{ts: e.ts, dir: e.dir})
	if n := e.mustNode("a"); n.IsDir() {
		t.Fatal("a restored symlink turned the service's file into a folder")
	}
	if _, ok := e.core.meta.Get("a/l"); ok {
		t.Fatal("the symlink's record was kept")
	}
}
