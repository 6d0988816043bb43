package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"evofs/remote"
	"evofs/remote/emulator"
)

func xattr(t testing.TB, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return string(buf[:n])
}

func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// serviceVersions lists a file's versions on the service, oldest first.
func (m *testMount) serviceVersions(id string) []remote.VersionID {
	m.t.Helper()
	meta, err := m.client.GetByID(m.t.Context(), uuid.MustParse(id), remote.GetOptions{IncludeVersions: true, Deleted: true})
	if err != nil {
		m.t.Fatalf("versions of %s: %v", id, err)
	}
	var out []remote.VersionID
	for _, v := range meta.Versions {
		out = append(out, v.VersionID)
	}
	slices.SortFunc(out, func(a, b remote.VersionID) int {
		if a.Less(b) {
			return -1
		}
		return 1
	})
	return out
}

// Three versions written through the mount are listed in .evofs/versions,
// sorted by time, each with its own bytes, size and version id; copying
// version 1 back publishes a fourth version with version 1's bytes.
func TestHistoryVersions(t *testing.T) {
	m := mountT(t, mountOpts{})
	if err := os.Mkdir(m.path("drill"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := m.path("drill/holes.csv")
	data := [][]byte{randomBytes(1, 300<<10), randomBytes(2, 5000), randomBytes(3, 2<<20)}
	for _, d := range data {
		writeFile(t, p, d)
		m.drain()
	}
	id, _ := m.waitRemote("drill/holes.csv", data[2])
	vers := m.serviceVersions(id)
	if len(vers) != 3 {
		t.Fatalf("service has %d versions, want 3", len(vers))
	}

	if slices.Contains(names(t, m.dir), ".evofs") {
		t.Error("the control folder shows in the root's listing")
	}
	view := m.path(".evofs/versions/drill/holes.csv")
	ents := names(t, view)
	if len(ents) != 3 {
		t.Fatalf("versions view lists %q, want 3 versions", ents)
	}
	for i, name := range ents {
		vp := filepath.Join(view, name)
		if !strings.HasSuffix(name, " holes.csv") {
			t.Errorf("version %d is named %q", i, name)
		}
		mustEqual(t, "version "+name, readFile(t, vp), data[i])
		st, err := os.Stat(vp)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(data[i])) {
			t.Errorf("%s: size %d, want %d", name, st.Size(), len(data[i]))
		}
		if got := xattr(t, vp, "user.evofs.version_id"); got != string(vers[i]) {
			t.Errorf("%s: version_id %s, want %s", name, got, vers[i])
		}
		if got := xattr(t, vp, "user.evofs.file_id"); got != id {
			t.Errorf("%s: file_id %s, want %s", name, got, id)
		}
	}

	// cp from the view: a new version of the same file, with version 1's bytes
	if out, err := exec.Command("cp", filepath.Join(view, ents[0]), p).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	m.drain()
	id2, _ := m.waitRemote("drill/holes.csv", data[0])
	if id2 != id {
		t.Fatalf("copying a version back made a new file %s (was %s)", id2, id)
	}
	now := m.serviceVersions(id)
	if len(now) != 4 || !slices.Equal(now[:3], vers) {
		t.Fatalf("versions after cp: %v, want %v and one more", now, vers)
	}
	ents = names(t, view)
	if len(ents) != 4 {
		t.Fatalf("versions view after cp lists %q, want 4", ents)
	}
	mustEqual(t, "version 4", readFile(t, filepath.Join(view, ents[3])), data[0])
}

// The control folder costs nothing until a file's versions or the trash
// are listed; listing the versions of one file is one request, and a
// second listing none while the file has not changed.
func TestHistoryRequestBudget(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	for i := 0; i < 3; i++ {
		ts.PutFile(ts.Org, ts.Workspace, "A/b.txt", []byte{byte('a' + i)})
	}
	ts.PutFile(ts.Org, ts.Workspace, "c.txt", []byte("c"))
	m := mountOn(t, ts, mountOpts{})
	ts.ResetRequests()
	if st, err := os.Stat(m.path(".evofs")); err != nil || !st.IsDir() {
		t.Fatalf("stat .evofs: %v", err)
	}
	if got := names(t, m.path(".evofs")); !slices.Equal(got, []string{"trash", "versions"}) {
		t.Errorf(".evofs lists %q", got)
	}
	if got := names(t, m.path(".evofs/versions")); !slices.Equal(got, []string{"A", "c.txt"}) {
		t.Errorf(".evofs/versions lists %q", got)
	}
	os.Stat(m.path(".evofs/trash"))
	if n := ts.Requests(emulator.OpAny); n != 0 {
		t.Fatalf("entering the control folder made %d requests", n)
	}
	view := m.path(".evofs/versions/A/b.txt")
	ents, err := os.ReadDir(view)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := e.Info(); err != nil {
			t.Fatal(err)
		}
	}
	if len(ents) != 3 {
		t.Fatalf("%d versions listed, want 3", len(ents))
	}
	if n := ts.Requests(emulator.OpAny); n != 1 {
		t.Errorf("listing the versions of a file made %d requests, want 1", n)
	}
	ts.ResetRequests()
	names(t, view)
	if n := ts.Requests(emulator.OpAny); n != 0 {
		t.Errorf("listing the versions again made %d requests, want 0", n)
	}
	mustEqual(t, "version 2", readFile(t, filepath.Join(view, ents[1].Name())), []byte("b"))
}

// Every change in the control folder is refused with EROFS, and nothing
// reaches the service.
func TestHistoryReadOnly(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	ts.PutFile(ts.Org, ts.Workspace, "a.txt", []byte("one"))
	ts.PutFile(ts.Org, ts.Workspace, "gone.txt", []byte("gone"))
	ts.DeleteFile(ts.Org, ts.Workspace, "gone.txt")
	m := mountOn(t, ts, mountOpts{})
	view := m.path(".evofs/versions/a.txt")
	ents := names(t, view)
	if len(ents) != 1 {
		t.Fatalf("versions: %q", ents)
	}
	ver := filepath.Join(view, ents[0])
	trashed := m.path(".evofs/trash/gone.txt")
	mustEqual(t, "trash entry", readFile(t, trashed), []byte("gone"))
	ts.ResetRequests()

	wantErrno(t, "create in a version list", os.WriteFile(filepath.Join(view, "new.txt"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "create in versions", os.WriteFile(m.path(".evofs/versions/new.txt"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "create in the trash", os.WriteFile(m.path(".evofs/trash/new.txt"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "create in .evofs", os.WriteFile(m.path(".evofs/new.txt"), []byte("x"), 0o644), syscall.EROFS)
	_, err := os.OpenFile(ver, os.O_WRONLY, 0)
	wantErrno(t, "open a version for writing", err, syscall.EROFS)
	_, err = os.OpenFile(trashed, os.O_RDWR, 0)
	wantErrno(t, "open a trash entry for writing", err, syscall.EROFS)
	wantErrno(t, "truncate a version", os.Truncate(ver, 0), syscall.EROFS)
	wantErrno(t, "chmod a version", os.Chmod(ver, 0o600), syscall.EROFS)
	wantErrno(t, "mkdir in the trash", os.Mkdir(m.path(".evofs/trash/d"), 0o755), syscall.EROFS)
	wantErrno(t, "rm a version", os.Remove(ver), syscall.EROFS)
	wantErrno(t, "rm in the trash", os.Remove(trashed), syscall.EROFS)
	wantErrno(t, "rmdir .evofs/versions", os.Remove(m.path(".evofs/versions")), syscall.EROFS)
	wantErrno(t, "rm -r .evofs", os.RemoveAll(m.path(".evofs")), syscall.EROFS)
	wantErrno(t, "mv a version out", os.Rename(ver, m.path("old.txt")), syscall.EROFS)
	wantErrno(t, "mv into the trash", os.Rename(m.path("a.txt"), m.path(".evofs/trash/a.txt")), syscall.EROFS)
	wantErrno(t, "symlink in versions", os.Symlink("x", m.path(".evofs/versions/l")), syscall.EROFS)
	wantErrno(t, "mkdir .evofs", os.Mkdir(m.path(".evofs"), 0o755), syscall.EEXIST)
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// (the kernel may refuse this one itself, with EEXIST)
	if err := os.Rename(m.path("d"), m.path(".evofs")); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mv a folder onto .evofs: %v", err)
	}
	if got := names(t, m.path(".evofs")); !slices.Equal(got, []string{"trash", "versions"}) {
		t.Errorf(".evofs lists %q after mv onto it", got)
	}
	for _, op := range []emulator.Op{emulator.OpUpsertByPath, emulator.OpUpdateByID, emulator.OpRestore, emulator.OpDeleteByID, emulator.OpDeleteByPath} {
		if n := ts.Requests(op); n != 0 {
			t.Errorf("%d %s requests", n, op)
		}
	}
	mustEqual(t, "a.txt", readFile(t, m.path("a.txt")), []byte("one"))
	mustEqual(t, "version", readFile(t, ver), []byte("one"))
}
