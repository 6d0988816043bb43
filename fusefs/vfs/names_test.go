package vfs

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
)

func TestCaseInsensitiveLookupAndCreate(t *testing.T) {
	e := newSeeded(t, coreOpts{}, map[string][]byte{"Docs/Report.PDF": []byte("pdf")})
	n := e.mustNode("docs/REPORT.pdf")
	if e.core.Path(n) != "Docs/Report.PDF" {
		t.Fatalf("path %q", e.core.Path(n))
	}
	d := e.mustNode("DOCS")
	if _, _, _, err := e.core.Create(ctxT(t), d, "report.pdf", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL); err != ErrExist {
		t.Fatalf("O_EXCL create of a case variant: %v", err)
	}
	m, h, _, err := e.core.Create(ctxT(t), d, "REPORT.PDF", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if m != n {
		t.Fatal("create of a case variant made a second node")
	}
	e.write(h, []byte("new pdf"), 0)
	e.closeH(h)
	if _, err := e.core.Mkdir(e.core.Root(), "docs"); err != ErrExist {
		t.Fatalf("mkdir of a case variant: %v", err)
	}
	e.drain()
	if got := join(e.remotePaths()); got != "Docs/Report.PDF" {
		t.Fatalf("service holds %s", got)
	}
	e.remoteEqual("Docs/Report.PDF", []byte("new pdf"))
	if got := join(e.names("")); got != "Docs/" {
		t.Fatalf("root %s", got)
	}
}

func TestInvalidNames(t *testing.T) {
	e := newCore(t, coreOpts{})
	root := e.core.Root()
	long := strings.Repeat("a", 256)
	for _, c := range []struct {
		name string
		want error
	}{
		{"trailing ", remote.ErrInvalidPath},
		{" leading", remote.ErrInvalidPath},
		{long, remote.ErrNameTooLong},
		{"ctl\x01", remote.ErrInvalidPath},
	} {
		_, _, _, err := e.core.Create(ctxT(t), root, c.name, syscall.O_WRONLY|syscall.O_CREAT)
		wantErr(t, "create "+c.name, err, c.want)
		_, err = e.core.Mkdir(root, c.name)
		wantErr(t, "mkdir "+c.name, err, c.want)
	}
	e.writeFile("ok", []byte("x"))
	wantErr(t, "rename to a long name", e.core.Rename(ctxT(t), root, "ok", root, long, 0), remote.ErrNameTooLong)
	wantErr(t, "rename to a trailing space", e.core.Rename(ctxT(t), root, "ok", root, "ok ", 0), remote.ErrInvalidPath)
	// 255 characters (multi-byte) are fine
	e.writeFile(strings.Repeat("é", 255), []byte("y"))
	e.drain()
	if got := len(e.remotePaths()); got != 2 {
		t.Fatalf("%d files on the service", got)
	}
}

func TestUnlink(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	e.writeFile("pub", []byte("published"))
	e.drain()
	e.writeFile("unpub", []byte("never uploaded"))
	if err := e.unlink("pub"); err != nil {
		t.Fatal(err)
	}
	e.remoteAbsent("pub") // deleted synchronously
	e.ts.ResetRequests()
	if err := e.unlink("unpub"); err != nil {
		t.Fatal(err)
	}
	e.drain()
	if n := e.ts.Requests(emulator.OpAny); n != 0 {
		t.Fatalf("unlink of an unpublished file made %d requests", n)
	}
	if len(e.core.Queue().Status()) != 0 {
		t.Fatal("a job is left")
	}
	if got := join(e.names("")); got != "" {
		t.Fatalf("root %s", got)
	}
	if err := e.unlink("pub"); err != ErrNotExist {
		t.Fatalf("second unlink: %v", err)
	}
	e.core.Mkdir(e.core.Root(), "D")
	if err := e.unlink("D"); err != ErrIsDir {
		t.Fatalf("unlink a folder: %v", err)
	}
	e.refresh()
	if got := join(e.names("")); got != "D/" {
		t.Fatalf("root after refresh %s", got)
	}
}

func TestUnlinkWithOpenHandle(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.writeFile("f", []byte("0123456789"))
	e.drain()
	h := e.open("f", syscall.O_RDWR)
	r := e.open("f", syscall.O_RDONLY)
	if err := e.unlink("f"); err != nil {
		t.Fatal(err)
	}
	e.remoteAbsent("f")
	e.write(h, []byte("AB"), 2)
	buf := make([]byte, 20)
	n, err := h.Read(ctxT(t), buf, 0)
	if err != nil || string(buf[:n]) != "01AB456789" {
		t.Fatalf("read the unlinked file through the writer: %q %v", buf[:n], err)
	}
	n, err = r.Read(ctxT(t), buf, 0)
	if err != nil || n != 10 {
		t.Fatalf("read the unlinked file through the reader: %q %v", buf[:n], err)
	}
	e.ts.ResetRequests()
	e.closeH(h)
	r.Release()
	e.drain()
	if p := e.publishes(); p != 0 {
		t.Fatalf("%d publishes after unlink", p)
	}
	e.remoteAbsent("f")

	// same for a new file that was never published
	_, w := e.create("g")
	e.write(w, []byte("abc"), 0)
	if err := e.unlink("g"); err != nil {
		t.Fatal(err)
	}
	e.write(w, []byte("d"), 3)
	n, err = w.Read(ctxT(t), buf, 0)
	if err != nil || string(buf[:n]) != "abcd" {
		t.Fatalf("read: %q %v", buf[:n], err)
	}
	e.closeH(w)
	e.drain()
	if p := e.publishes(); p != 0 {
		t.Fatalf("%d publishes of an unlinked new file", p)
	}
	e.remoteAbsent("g")
}

func TestUnlinkDuringUpload(t *testing.T) {
	e := newCore(t, coreOpts{})
	e.ts.FailNext(emulator.OpPutBlob, 1, emulator.Fault{Latency: 500 * time.Millisecond})
	n := e.writeFile("f", randomBytes(10, 10_000))
	e.waitState(n, "uploading")
	if err := e.unlink("f"); err != nil {
		t.Fatal(err)
	}
	e.drain()
	if !eventually(t, 20*time.Second, func() bool { _, _, _, err := e.remote("f"); return err != nil }) {
		t.Fatal("a file unlinked during its first upload is on the service")
	}
	e.refresh()
	if _, err := e.node("f"); err != ErrNotExist {
		t.Fatalf("lookup after refresh: %v", err)
	}
}

func TestLocalOnlyPatternsNeverUpload(t *testing.T) {
	e := newCore(t, coreOpts{})
	names := []string{".~lock.x.odt#", "~$x.docx", ".x.swp", "x~", "4913", ".DS_Store"}
	for _, p := range names {
		e.writeFile("D/"+p, []byte("local "+p))
	}
	e.writeFile("D/real.txt", []byte("real"))
	e.drain()
	if got := join(e.remotePaths()); got != "D/real.txt" {
		t.Fatalf("service holds %s", got)
	}
	if p := e.publishes(); p != 1 {
		t.Fatalf("%d publishes", p)
	}
	e.refresh()
	for _, p := range names {
		n := e.mustNode("D/" + p)
		if st := e.core.Xattrs(n)[XattrState]; st != "local" {
			t.Errorf("%s state %q", p, st)
		}
		mustEqual(t, p, e.readFile("D/"+p), []byte("local "+p))
	}
	// rewritten and truncated: still local
	h := e.open("D/~$x.docx", syscall.O_RDWR)
	e.write(h, []byte("more"), 0)
	if err := h.Fsync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if err := e.core.Truncate(ctxT(t), e.mustNode("D/.x.swp"), nil, 1); err != nil {
		t.Fatal(err)
	}
	e.drain()
	if p := e.publishes(); p != 1 {
		t.Fatalf("%d publishes", p)
	}
	if err := e.unlink("D/.x.swp"); err != nil {
		t.Fatal(err)
	}
	if n := e.ts.Requests(emulator.OpDeleteByID); n != 0 {
		t.Fatalf("unlink of a local-only file sent %d deletes", n)
	}
}

func TestCustomLocalPatterns(t *testing.T) {
	e := newCore(t, coreOpts{localPatterns: []string{"*.tmp"}})
	e.writeFile("a.tmp", []byte("t"))
	e.writeFile("b~", []byte("b")) // not local under custom patterns
	e.drain()
	if got := join(e.remotePaths()); got != "b~" {
		t.Fatalf("service holds %s", got)
	}
	if _, err := New(Config{LocalPatterns: []string{"["}}, e.client, e.cache); err == nil {
		t.Fatal("a bad pattern was accepted")
	}
}

func TestXattrs(t *testing.T) {
	e := newCore(t, coreOpts{delay: time.Hour})
	n := e.writeFile("f", []byte("x"))
	x := e.core.Xattrs(n)
	if x[XattrState] != "pending" || x[XattrFileID] != "" {
		t.Fatalf("pending xattrs %v", x)
	}
	if x := e.core.Xattrs(e.core.Root()); len(x) != 0 {
		t.Fatalf("root xattrs without a control socket: %v", x)
	}
	if st := e.core.Status(); !st.Online || len(st.Jobs) != 1 || st.Jobs[0].Path != "f" {
		t.Fatalf("status %+v", st)
	}
	e.drain()
	_, id, v := e.mustRemote("f")
	x = e.core.Xattrs(n)
	if x[XattrState] != "published" || x[XattrFileID] != id.String() || x[XattrVersionID] != v {
		t.Fatalf("published xattrs %v, want %s@%s", x, id, v)
	}
	d, _ := e.core.Mkdir(e.core.Root(), "D")
	if x := e.core.Xattrs(d); len(x) != 0 {
		t.Fatalf("folder xattrs %v", x)
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	e := newSeeded(t, coreOpts{readOnly: true}, map[string][]byte{"D/f": []byte("ro")})
	root, d, f := e.core.Root(), e.mustNode("D"), e.mustNode("D/f")
	ctx := ctxT(t)
	if _, _, _, err := e.core.Create(ctx, root, "n", syscall.O_WRONLY|syscall.O_CREAT); err != ErrReadOnly {
		t.Errorf("create: %v", err)
	}
	for _, fl := range []int{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC} {
		if _, _, err := e.core.Open(ctx, f, fl); err != ErrReadOnly {
			t.Errorf("open %#x: %v", fl, err)
		}
	}
	if _, err := e.core.Mkdir(root, "M"); err != ErrReadOnly {
		t.Errorf("mkdir: %v", err)
	}
	if err := e.core.Rmdir(root, "D"); err != ErrReadOnly {
		t.Errorf("rmdir: %v", err)
	}
	if err := e.core.Unlink(ctx, d, "f"); err != ErrReadOnly {
		t.Errorf("unlink: %v", err)
	}
	if err := e.core.Rename(ctx, d, "f", d, "g", 0); err != ErrReadOnly {
		t.Errorf("rename: %v", err)
	}
	if err := e.core.Truncate(ctx, f, nil, 0); err != ErrReadOnly {
		t.Errorf("truncate: %v", err)
	}
	if a := e.core.Attr(f); a.Mode&0o222 != 0 {
		t.Errorf("mode %o", a.Mode)
	}
	mustEqual(t, "read", e.readFile("D/f"), []byte("ro"))
	if e.publishes()+e.ts.Requests(emulator.OpDeleteByID) != 0 {
		t.Error("a read-only core changed the service")
	}
}

func TestMkdirRmdir(t *testing.T) {
	e := newCore(t, coreOpts{})
	root := e.core.Root()
	d, err := e.core.Mkdir(root, "D")
	if err != nil {
		t.Fatal(err)
	}
	if !d.IsDir() || e.core.Attr(d).Mode != syscall.S_IFDIR|0o755 {
		t.Fatalf("attr %+v", e.core.Attr(d))
	}
	if _, err := e.core.Mkdir(root, "D"); err != ErrExist {
		t.Fatalf("mkdir twice: %v", err)
	}
	e.writeFile("D/x", []byte("x"))
	if _, err := e.core.Mkdir(e.mustNode("D/x"), "y"); err != ErrNotDir {
		t.Fatalf("mkdir in a file: %v", err)
	}
	if _, err := e.core.Lookup(e.mustNode("D/x"), "y"); err != ErrNotDir {
		t.Fatalf("lookup in a file: %v", err)
	}
	if err := e.core.Rmdir(root, "D"); err != ErrNotEmpty {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := e.core.Rmdir(d, "x"); err != ErrNotDir {
		t.Fatalf("rmdir a file: %v", err)
	}
	if err := e.core.Rmdir(root, "nope"); err != ErrNotExist {
		t.Fatalf("rmdir missing: %v", err)
	}
	e.drain()
	if err := e.unlink("D/x"); err != nil {
		t.Fatal(err)
	}
	// an explicit empty folder survives a refresh; remove it
	e.refresh()
	if got := join(e.names("")); got != "D/" {
		t.Fatalf("root %s", got)
	}
	if err := e.core.Rmdir(root, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node("D"); err != ErrNotExist {
		t.Fatalf("lookup after rmdir: %v", err)
	}
	if _, err := e.core.Readdir(e.mustNode("")); err != nil {
		t.Fatal(err)
	}
	e.remoteAbsent("D/x")
}

func TestReadFailureIsAnErrorNeverWrongBytes(t *testing.T) {
	data := randomBytes(11, 3<<20)
	e := newSeeded(t, coreOpts{}, map[string][]byte{"f": data})
	e.ts.FailRate(emulator.OpGetBlob, 1, emulator.Fault{Status: 500})
	h := e.open("f", syscall.O_RDONLY)
	buf := make([]byte, 64<<10)
	n, err := h.Read(ctxT(t), buf, 1<<20)
	if err == nil {
		t.Fatalf("read succeeded with %d bytes while every download fails", n)
	}
	if n > 0 && string(buf[:n]) != string(data[1<<20:1<<20+n]) {
		t.Fatal("wrong bytes returned")
	}
	if _, _, err := e.core.Open(ctxT(t), e.mustNode("f"), syscall.O_RDWR); err == nil {
		t.Fatal("open RDWR succeeded without the content")
	}
	e.ts.ClearFaults()
	got, err := readAll(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "after the fault cleared", got, data)
	h.Release()
	// the failed RDWR open left no local copy behind: a writer sees the real bytes
	w := e.open("f", syscall.O_RDWR)
	e.write(w, []byte("Z"), 0)
	e.closeH(w)
	e.drain()
	want := append([]byte("Z"), data[1:]...)
	e.remoteEqual("f", want)
}
