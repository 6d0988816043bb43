package vfs

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"evofs/remote/emulator"
)

func TestCreateWritePublishReadBack(t *testing.T) {
	e := newCore(t, coreOpts{})
	data := randomBytes(1, 3<<20+17)
	n, h := e.create("A/B/data.bin")
	// three writes, the last one overlapping, out of order
	e.write(h, data[1<<20:], 1<<20)
	e.write(h, data[:1<<20], 0)
	e.write(h, data[100:200], 100)
	// read-your-writes before anything is published (same handle and a new reader)
	got, err := readAll(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read through the writer", got, data)
	mustEqual(t, "read through a new reader", e.readFile("A/B/data.bin"), data)
	if a := e.core.Attr(n); a.Size != int64(len(data)) || a.Mode != syscall.S_IFREG|0o644 || a.UID != 1000 {
		t.Fatalf("attr %+v", a)
	}
	e.remoteAbsent("A/B/data.bin")
	e.closeH(h)
	e.drain()
	id, v := e.remoteEqual("A/B/data.bin", data)
	if vs := e.versions(id); len(vs) != 1 || vs[0] != remoteVersion(v) {
		t.Fatalf("versions %v, want exactly one (%s)", vs, v)
	}
	x := e.core.Xattrs(n)
	if x[XattrFileID] != id.String() || x[XattrVersionID] != v || x[XattrState] != "published" {
		t.Fatalf("xattrs %v, want file %s version %s published", x, id, v)
	}
	// reopen: now clean content, read through the cache (bytes adopted from
	// the staging file, so no download is needed)
	gets := e.ts.Requests(emulator.OpGetBlob)
	mustEqual(t, "reread after publish", e.readFile("A/B/data.bin"), data)
	if d := e.ts.Requests(emulator.OpGetBlob) - gets; d != 0 {
		t.Errorf("reading our own published file downloaded %d times; the cache should have adopted it", d)
	}
	// a second core (fresh cache) sees the same bytes by downloading them
	e2 := newCore(t, coreOpts{ts: e.ts})
	mustEqual(t, "second core", e2.readFile("A/B/data.bin"), data)
	if e.ts.Requests(emulator.OpGetBlob) == gets {
		t.Error("the second core read without downloading")
	}
	if got := join(e2.names("A")); got != "B/" {
		t.Errorf("second core's A: %s", got)
	}
}

func TestEmptyFilePublishes(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("empty", nil)
	e.drain()
	e.remoteEqual("empty", []byte{})
	if got := e.readFile("empty"); len(got) != 0 {
		t.Fatalf("read %d bytes of an empty file", len(got))
	}
}

func TestOpenTruncDoesNotDownload(t *testing.T) {
	old := randomBytes(2, 300_000)
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f.bin": old})
	_, id, _ := e.mustRemote("f.bin")
	e.ts.ResetRequests()
	h := e.open("f.bin", syscall.O_WRONLY|syscall.O_TRUNC)
	if a := e.core.Attr(h.Node()); a.Size != 0 {
		t.Fatalf("size after O_TRUNC: %d", a.Size)
	}
	data := []byte("new content")
	e.write(h, data, 0)
	e.closeH(h)
	e.drain()
	if n := e.ts.Requests(emulator.OpGetBlob); n != 0 {
		t.Fatalf("O_TRUNC open downloaded %d times", n)
	}
	if gid, _ := e.remoteEqual("f.bin", data); gid != id {
		t.Fatalf("file id changed %s → %s", id, gid)
	}
	if vs := e.versions(id); len(vs) != 2 {
		t.Fatalf("versions %v, want 2", vs)
	}
}

func TestOpenRDWRFetchesOnceAndPublishesMerge(t *testing.T) {
	old := randomBytes(3, 200_000)
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f.bin": old})
	e.ts.ResetRequests()
	h := e.open("f.bin", syscall.O_RDWR)
	if n := e.ts.Requests(emulator.OpGetBlob); n != 1 {
		t.Fatalf("open RDWR downloaded %d times, want 1", n)
	}
	e.write(h, []byte("HELLO"), 1000)
	want := append([]byte(nil), old...)
	copy(want[1000:], "HELLO")
	got, err := readAll(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read your writes", got, want)
	mustEqual(t, "another reader", e.readFile("f.bin"), want)
	e.closeH(h)
	e.drain()
	e.remoteEqual("f.bin", want)
	mustEqual(t, "after publish", e.readFile("f.bin"), want)
	if n := e.ts.Requests(emulator.OpGetBlob); n != 1 {
		t.Fatalf("%d downloads in all, want 1", n)
	}
}

func TestOpenForWriteWithoutWritingPublishesNothing(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f": []byte("abc")})
	_, id, v := e.mustRemote("f")
	e.ts.ResetRequests()
	h := e.open("f", syscall.O_RDWR)
	e.closeH(h)
	e.drain()
	if n := e.publishes(); n != 0 {
		t.Fatalf("%d publishes of an unchanged file", n)
	}
	if st := e.core.Xattrs(e.mustNode("f"))[XattrState]; st != "published" {
		t.Fatalf("state %q", st)
	}
	if _, gid, gv := e.mustRemote("f"); gid != id || gv != v {
		t.Fatal("the service's file changed")
	}
}

func TestWritesToQueuedFileCoalesce(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	n := e.writeFile("f.txt", []byte("one"))
	if st := e.core.Xattrs(n)[XattrState]; st != "pending" {
		t.Fatalf("state %q, want pending", st)
	}
	h := e.open("f.txt", syscall.O_WRONLY)
	e.write(h, []byte("two"), 3)
	e.closeH(h)
	// truncating create (shell >) of the same file
	e.writeFile("f.txt", []byte("three!"))
	if err := e.core.Truncate(ctxT(t), n, nil, 5); err != nil {
		t.Fatal(err)
	}
	if jobs := e.core.Queue().Status(); len(jobs) != 1 {
		t.Fatalf("%d jobs queued, want 1: %+v", len(jobs), jobs)
	}
	e.remoteAbsent("f.txt")
	e.drain()
	if p := e.publishes(); p != 1 {
		t.Fatalf("%d publishes, want 1", p)
	}
	id, _ := e.remoteEqual("f.txt", []byte("three"))
	if vs := e.versions(id); len(vs) != 1 {
		t.Fatalf("versions %v", vs)
	}
	if st := e.core.Xattrs(n)[XattrState]; st != "published" {
		t.Fatalf("state %q, want published", st)
	}
}

func TestWriteWhilePublishInFlight(t *testing.T) {
	e := newCore(t, coreOpts{})
	v1 := randomBytes(4, 100_000)
	v2 := randomBytes(5, 120_000)
	e.ts.FailNext(emulator.OpPutBlob, 1, emulator.Fault{Latency: 700 * time.Millisecond})
	n := e.writeFile("f.bin", v1)
	e.waitState(n, "uploading")
	h := e.open("f.bin", syscall.O_RDWR)
	got, err := readAll(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read during upload", got, v1)
	e.write(h, v2, 0)
	e.closeH(h)
	if _, ok := e.core.Queue().Pending(n.key); !ok {
		t.Fatal("nothing pending")
	}
	e.drain()
	id, _ := e.remoteEqual("f.bin", v2)
	vs := e.versions(id)
	if len(vs) != 2 {
		t.Fatalf("versions %v, want 2", vs)
	}
	mustEqual(t, "first version", e.versionBytes(id, vs[0]), v1)
	mustEqual(t, "second version", e.versionBytes(id, vs[1]), v2)
	mustEqual(t, "local read", e.readFile("f.bin"), v2)
	x := e.core.Xattrs(n)
	if x[XattrVersionID] != string(vs[1]) || x[XattrState] != "published" {
		t.Fatalf("xattrs %v, want version %s", x, vs[1])
	}
}

func TestFsyncAndSyncClosePublish(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	_, h := e.create("a")
	e.write(h, []byte("fsynced"), 0)
	if err := h.Fsync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.remoteEqual("a", []byte("fsynced")) // no drain: fsync waited for it
	h.Release()

	s := newCore(t, coreOpts{delay: time.Hour, syncClose: true})
	s.writeFile("b", []byte("closed"))
	s.remoteEqual("b", []byte("closed"))
}

func TestTruncatePath(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f": []byte("0123456789"), "g": []byte("xy")})
	if err := e.core.Truncate(ctxT(t), e.mustNode("f"), nil, 4); err != nil {
		t.Fatal(err)
	}
	if err := e.core.Truncate(ctxT(t), e.mustNode("g"), nil, 5); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "local f", e.readFile("f"), []byte("0123"))
	e.drain()
	e.remoteEqual("f", []byte("0123"))
	e.remoteEqual("g", []byte("xy\x00\x00\x00"))
	if err := e.core.Truncate(ctxT(t), e.core.Root(), nil, 0); !errors.Is(err, ErrIsDir) {
		t.Fatalf("truncate a folder: %v", err)
	}
}
