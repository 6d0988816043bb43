package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"evofs/remote/emulator"
)

func TestCreateReadOverwriteAppendTruncate(t *testing.T) {
	m := mountT(t, mountOpts{emu: emulator.Options{PublishDelay: 20 * time.Millisecond}})
	p := m.path("notes.txt")

	v1 := []byte("first version\n")
	writeFile(t, p, v1)
	mustEqual(t, "read back", readFile(t, p), v1)
	id1, ver1 := m.waitRemote("notes.txt", v1)

	v2 := []byte("second, longer version of the file\n")
	writeFile(t, p, v2)
	id2, ver2 := m.waitRemote("notes.txt", v2)
	if id2 != id1 || ver2 == ver1 {
		t.Fatalf("overwrite: file id %s→%s, version %s→%s; want same id, new version", id1, id2, ver1, ver2)
	}

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("appended\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	v3 := append(append([]byte{}, v2...), "appended\n"...)
	mustEqual(t, "after append", readFile(t, p), v3)
	m.waitRemote("notes.txt", v3)

	if err := os.Truncate(p, 6); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "after truncate", readFile(t, p), v3[:6])
	m.waitRemote("notes.txt", v3[:6])

	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 6 || st.Mode().Perm() != 0o644 || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
		t.Fatalf("stat: size %d mode %v uid %d", st.Size(), st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
	}
}

func TestLargeFileAndRandomWrites(t *testing.T) {
	m := mountT(t, mountOpts{})
	data := randomBytes(1, 64<<20)
	p := m.path("big.bin")
	writeFile(t, p, data)
	mustEqual(t, "64 MiB read back", readFile(t, p), data)
	m.waitRemote("big.bin", data)

	// random-offset writes into the published file, read back and published
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{}, data...)
	patch := randomBytes(2, 4096)
	for i, off := range []int64{0, 12345, 33 << 20, 64<<20 - 4096, 64<<20 + 100} {
		b := patch[:1000+i*500]
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		if end := off + int64(len(b)); end > int64(len(want)) {
			want = append(want, make([]byte, end-int64(len(want)))...)
		}
		copy(want[off:], b)
	}
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	mustEqual(t, "read own writes", got, want)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("big.bin", want)
}

func TestReadOnDemandAndWarm(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	// Big enough for the cache to drop what the whole-file read passed
	// from the page cache of its cache file (drop-behind steps of 32 MiB):
	// the warm read must still find every byte on disk.
	data := randomBytes(3, 100<<20)
	if _, _, err := ts.PutFile(ts.Org, ts.Workspace, "data/survey.bin", data); err != nil {
		t.Fatal(err)
	}
	m := mountOn(t, ts, mountOpts{})
	f, err := os.Open(m.path("data/survey.bin"))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4096)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustEqual(t, "first page", head, data[:4096])
	if u := m.cache.Usage(); u.Bytes >= int64(len(data))/2 {
		t.Fatalf("reading one page cached %d of %d bytes: not on demand", u.Bytes, len(data))
	}
	mustEqual(t, "whole file", readFile(t, m.path("data/survey.bin")), data)

	// Warm: another full read makes no request at all, also once the
	// kernel's pages of the mounted file are dropped and the read reaches
	// evofs's cache (whose own pages drop-behind has partly dropped).
	f, err = os.Open(m.path("data/survey.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ts.ResetRequests()
	mustEqual(t, "warm read", readFile(t, m.path("data/survey.bin")), data)
	if n := ts.Requests(emulator.OpGetBlob) + ts.Requests(emulator.OpGetByID); n != 0 {
		t.Fatalf("warm read made %d requests", n)
	}
}

func TestMkdirRmdirUnlink(t *testing.T) {
	m := mountT(t, mountOpts{})
	if err := os.MkdirAll(m.path("a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(m.path("a/b/c")); err != nil || !st.IsDir() {
		t.Fatalf("mkdir: %v", err)
	}
	writeFile(t, m.path("a/b/c/f.txt"), []byte("x"))
	if err := os.Remove(m.path("a/b/c")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v, want ENOTEMPTY", err)
	}
	m.waitRemote("a/b/c/f.txt", []byte("x"))
	if err := os.Remove(m.path("a/b/c/f.txt")); err != nil {
		t.Fatal(err)
	}
	m.waitRemoteGone("a/b/c/f.txt")
	if err := os.Remove(m.path("a/b/c")); err != nil {
		t.Fatalf("rmdir empty: %v", err)
	}
	// an empty local folder stays while mounted
	ents, err := os.ReadDir(m.path("a/b"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("a/b: %v %v", ents, err)
	}
}

func TestCreatedAndDeletedBeforeUploadNeverReachService(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: time.Hour})
	for i := 0; i < 5; i++ {
		p := m.path("tmp" + string(rune('a'+i)))
		writeFile(t, p, []byte("scratch"))
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	m.drain()
	if n := m.ts.Requests(emulator.OpUpsertByPath) + m.ts.Requests(emulator.OpPutBlob); n != 0 {
		t.Fatalf("%d upload requests for files deleted before upload", n)
	}
}

func TestRenameFileAndFolder(t *testing.T) {
	m := mountT(t, mountOpts{})
	a := []byte("content of a")
	writeFile(t, m.path("a.txt"), a)
	m.waitRemote("a.txt", a)
	if err := os.Rename(m.path("a.txt"), m.path("b.txt")); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "renamed", readFile(t, m.path("b.txt")), a)
	m.waitRemote("b.txt", a)
	m.waitRemoteGone("a.txt")

	// a folder with two files moves as a whole
	os.MkdirAll(m.path("src/sub"), 0o755)
	x, y := randomBytes(4, 10000), randomBytes(5, 20000)
	writeFile(t, m.path("src/x.bin"), x)
	writeFile(t, m.path("src/sub/y.bin"), y)
	m.waitRemote("src/x.bin", x)
	m.waitRemote("src/sub/y.bin", y)
	if err := os.Rename(m.path("src"), m.path("dst")); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "dst/x.bin", readFile(t, m.path("dst/x.bin")), x)
	mustEqual(t, "dst/sub/y.bin", readFile(t, m.path("dst/sub/y.bin")), y)
	m.waitRemote("dst/x.bin", x)
	m.waitRemote("dst/sub/y.bin", y)
	m.waitRemoteGone("src/x.bin")
	m.waitRemoteGone("src/sub/y.bin")
}

func TestFolderRenameAboveLimitIsEXDEV(t *testing.T) {
	m := mountT(t, mountOpts{maxDirRename: 1000})
	os.Mkdir(m.path("d"), 0o755)
	writeFile(t, m.path("d/f"), randomBytes(6, 2000))
	if err := os.Rename(m.path("d"), m.path("e")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("rename of a big folder: %v, want EXDEV", err)
	}
}

func TestRenameOverExistingKeepsIdentity(t *testing.T) {
	m := mountT(t, mountOpts{})
	orig := []byte("original")
	writeFile(t, m.path("doc.txt"), orig)
	id, ver := m.waitRemote("doc.txt", orig)

	next := []byte("replacement content")
	writeFile(t, m.path("doc.txt.tmp"), next)
	if err := os.Rename(m.path("doc.txt.tmp"), m.path("doc.txt")); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "after rename", readFile(t, m.path("doc.txt")), next)
	id2, ver2 := m.waitRemote("doc.txt", next)
	if id2 != id || ver2 == ver {
		t.Fatalf("rename over existing: id %s→%s version %s→%s; want same id, new version", id, id2, ver, ver2)
	}
	m.drain()
	if _, _, _, err := m.remoteFile("doc.txt.tmp"); err == nil {
		t.Fatalf("temp file left on the service")
	}
}

// The save patterns of common programs keep the file's identity and never
// upload their lock, swap, backup or temp files.
func TestSavePatterns(t *testing.T) {
	type step func(m *testMount, name string, content []byte)
	patterns := map[string]step{
		"libreoffice": func(m *testMount, name string, content []byte) {
			lock := m.path(".~lock." + name + "#")
			writeFile(t, lock, []byte("user,host,time"))
			tmp := m.path("lu4711abcd.tmp")
			writeFile(t, tmp, content)
			if err := os.Rename(tmp, m.path(name)); err != nil {
				t.Fatal(err)
			}
			os.Remove(lock)
		},
		"vim": func(m *testMount, name string, content []byte) {
			swp := m.path("." + name + ".swp")
			writeFile(t, swp, []byte("swap"))
			if err := os.Rename(m.path(name), m.path(name+"~")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, m.path(name), content)
			if err := os.Remove(m.path(name + "~")); err != nil {
				t.Fatal(err)
			}
			os.Remove(swp)
		},
		"rsync": func(m *testMount, name string, content []byte) {
			tmp := m.path("." + name + ".Xy12Ab")
			writeFile(t, tmp, content)
			if err := os.Rename(tmp, m.path(name)); err != nil {
				t.Fatal(err)
			}
		},
		"sed-i": func(m *testMount, name string, content []byte) {
			tmp := m.path("sedAbC123")
			old := readFile(t, m.path(name))
			if len(old) == 0 {
				t.Fatal("empty original")
			}
			writeFile(t, tmp, content)
			if err := os.Rename(tmp, m.path(name)); err != nil {
				t.Fatal(err)
			}
		},
	}
	names := make([]string, 0, len(patterns))
	for k := range patterns {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, pat := range names {
		t.Run(pat, func(t *testing.T) {
			m := mountT(t, mountOpts{writeBackDelay: 50 * time.Millisecond})
			name := "report.odt"
			orig := randomBytes(7, 5000)
			writeFile(t, m.path(name), orig)
			id, ver := m.waitRemote(name, orig)
			edited := randomBytes(8, 7000)
			patterns[pat](m, name, edited)
			mustEqual(t, "local view", readFile(t, m.path(name)), edited)
			id2, ver2 := m.waitRemote(name, edited)
			if id2 != id || ver2 == ver {
				t.Fatalf("%s save: file id %s→%s, version %s→%s; want same id, new version", pat, id, id2, ver, ver2)
			}
			m.drain()
			resp, err := m.client.ListAll(t.Context(), listAll())
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, f := range resp {
				paths = append(paths, f.FullPath())
			}
			if len(paths) != 1 || paths[0] != name {
				t.Fatalf("service holds %v; want only %s", paths, name)
			}
			ents, _ := os.ReadDir(m.dir)
			for _, e := range ents {
				if e.Name() != name {
					t.Errorf("left in the mount: %s", e.Name())
				}
			}
		})
	}
}

func TestCaseInsensitiveNames(t *testing.T) {
	m := mountT(t, mountOpts{})
	writeFile(t, m.path("Report.CSV"), []byte("a,b\n"))
	mustEqual(t, "other case", readFile(t, m.path("report.csv")), []byte("a,b\n"))
	if _, err := os.OpenFile(m.path("REPORT.csv"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("O_EXCL create of a case variant: %v, want EEXIST", err)
	}
	writeFile(t, m.path("REPORT.csv"), []byte("c,d\n"))
	ents, err := os.ReadDir(m.dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "Report.CSV" {
		t.Fatalf("readdir: %v %v; want one entry Report.CSV", ents, err)
	}
	m.waitRemote("Report.CSV", []byte("c,d\n"))
}

func TestInvalidNames(t *testing.T) {
	m := mountT(t, mountOpts{})
	for name, want := range map[string]error{
		"trailing ":                syscall.EINVAL,
		" leading":                 syscall.EINVAL,
		"ctl\x01char":              syscall.EINVAL,
		strings.Repeat("n", 256):   syscall.ENAMETOOLONG,
		strings.Repeat("é", 255):   nil,
		"ok #?%&+ name.txt":        nil,
		"ünïcödé 文件.txt":           nil,
		"back\\slash:colon*q\"<>|": nil,
	} {
		err := os.WriteFile(m.path(name), []byte(name), 0o644)
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("create %q: %v, want %v", name, err, want)
		}
		if want == nil && err == nil {
			m.waitRemote(name, []byte(name))
		}
	}
}

func TestTwoMountsSeeEachOther(t *testing.T) {
	a := mountT(t, mountOpts{pollInterval: 200 * time.Millisecond})
	b := mountOn(t, a.ts, mountOpts{pollInterval: 200 * time.Millisecond})
	data := randomBytes(9, 3000)
	writeFile(t, a.path("shared.bin"), data)
	a.waitRemote("shared.bin", data)
	if !eventually(t, 10*time.Second, func() bool {
		got, err := os.ReadFile(b.path("shared.bin"))
		return err == nil && bytes.Equal(got, data)
	}) {
		t.Fatal("mount b never saw mount a's file")
	}
	// b updates it; a sees the new content (its page cache invalidated)
	data2 := randomBytes(10, 4000)
	writeFile(t, b.path("shared.bin"), data2)
	b.waitRemote("shared.bin", data2)
	if !eventually(t, 10*time.Second, func() bool {
		got, err := os.ReadFile(a.path("shared.bin"))
		return err == nil && bytes.Equal(got, data2)
	}) {
		t.Fatal("mount a never saw mount b's update")
	}
	// b deletes it; a stops showing it
	if err := os.Remove(b.path("shared.bin")); err != nil {
		t.Fatal(err)
	}
	if !eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(a.path("shared.bin"))
		return errors.Is(err, os.ErrNotExist)
	}) {
		t.Fatal("mount a still shows the deleted file")
	}
}

func TestOpenReaderKeepsItsVersion(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	v1 := randomBytes(11, 1<<20)
	ts.PutFile(ts.Org, ts.Workspace, "model.dat", v1)
	m := mountOn(t, ts, mountOpts{pollInterval: 100 * time.Millisecond})
	f, err := os.Open(m.path("model.dat"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 100)
	f.ReadAt(head, 0)
	v2 := randomBytes(12, 1<<20)
	ts.PutFile(ts.Org, ts.Workspace, "model.dat", v2)
	if !eventually(t, 10*time.Second, func() bool {
		got, err := os.ReadFile(m.path("model.dat"))
		return err == nil && bytes.Equal(got, v2)
	}) {
		t.Fatal("new opens never saw the remote update")
	}
	got := make([]byte, len(v1))
	if _, err := f.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	mustEqual(t, "open reader", got, v1)
}

func TestRemountShowsPublished(t *testing.T) {
	a := mountT(t, mountOpts{})
	files := map[string][]byte{"x/1.txt": []byte("one"), "x/y/2.bin": randomBytes(13, 70000), "3.txt": {}}
	for p, d := range files {
		os.MkdirAll(filepath.Dir(a.path(p)), 0o755)
		writeFile(t, a.path(p), d)
	}
	a.unmount()
	b := mountOn(t, a.ts, mountOpts{})
	for p, d := range files {
		mustEqual(t, p, readFile(t, b.path(p)), d)
	}
}

func TestXattrsAndStatfs(t *testing.T) {
	m := mountT(t, mountOpts{})
	writeFile(t, m.path("f.txt"), []byte("xattr"))
	id, ver := m.waitRemote("f.txt", []byte("xattr"))
	get := func(name string) string {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(m.path("f.txt"), name, buf)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(buf[:n])
	}
	if !eventually(t, 20*time.Second, func() bool { return get("user.evofs.version_id") == ver }) {
		t.Fatalf("version_id xattr %q, want %q", get("user.evofs.version_id"), ver)
	}
	if got := get("user.evofs.file_id"); got != id {
		t.Fatalf("file_id xattr %q, want %q", got, id)
	}
	if got := get("user.evofs.state"); got != "published" {
		t.Fatalf("state xattr %q", got)
	}
	// no SELinux labels or ACLs here: "not supported", so ls -l stops asking
	for _, name := range []string{"security.selinux", "system.posix_acl_access"} {
		if _, err := unix.Getxattr(m.path("f.txt"), name, make([]byte, 64)); !errors.Is(err, unix.ENOTSUP) {
			t.Fatalf("getxattr %s: %v, want ENOTSUP", name, err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil || st.Blocks == 0 || st.Bsize == 0 {
		t.Fatalf("statfs: %+v %v", st, err)
	}
	if err := os.Chmod(m.path("f.txt"), 0o600); err != nil {
		t.Fatalf("chmod must be accepted: %v", err)
	}
}

func TestReadFailureIsEIO(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	ts.PutFile(ts.Org, ts.Workspace, "f.bin", randomBytes(14, 100000))
	m := mountOn(t, ts, mountOpts{})
	ts.FailRate(emulator.OpGetBlob, 1, emulator.Fault{Status: 500})
	_, err := os.ReadFile(m.path("f.bin"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with the blob store failing: %v, want EIO", err)
	}
	ts.ClearFaults()
	data, _, _, _ := ts.ReadFile(ts.Org, ts.Workspace, "f.bin")
	mustEqual(t, "after recovery", readFile(t, m.path("f.bin")), data)
}
