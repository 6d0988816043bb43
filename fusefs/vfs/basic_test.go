package vfs

import (
	"syscall"
	"testing"

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
