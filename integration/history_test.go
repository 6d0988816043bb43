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

	// versions are cached like any file, and never revalidated
	m.ts.ResetRequests()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0) // so that reads reach evofs
	for i, name := range names(t, view) {
		mustEqual(t, "cached version "+name, readFile(t, filepath.Join(view, name)), data[i])
	}
	if n := m.ts.Requests(emulator.OpAny); n != 0 {
		t.Errorf("reading cached versions again made %d requests", n)
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

// A deleted file and a deleted folder's files appear in .evofs/trash with
// their bytes; mv of an entry to its old path restores the file with its
// identity and history (and the restored file is an ordinary file at once);
// a deletion by another client shows after a delta poll with no request of
// its own; mv elsewhere is EINVAL; `evofs restore MNT PATH` restores too.
func TestTrashRestore(t *testing.T) {
	m := mountT(t, mountOpts{})
	files := map[string][]byte{
		"a.txt":         randomBytes(10, 70<<10),
		"dir/b.txt":     randomBytes(11, 1000),
		"dir/sub/c.txt": randomBytes(12, 2<<20),
		"other.txt":     []byte("theirs"),
		"keep.txt":      []byte("keep"),
	}
	ids := map[string]string{}
	if err := os.MkdirAll(m.path("dir/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, d := range files {
		writeFile(t, m.path(p), d)
	}
	m.drain()
	for p, d := range files {
		ids[p], _ = m.waitRemote(p, d)
	}
	if err := os.Remove(m.path("a.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(m.path("dir")); err != nil {
		t.Fatal(err)
	}
	m.waitRemoteGone("a.txt")
	m.waitRemoteGone("dir/sub/c.txt")

	trash := m.path(".evofs/trash")
	if got := names(t, trash); !slices.Equal(got, []string{"a.txt", "dir"}) {
		t.Fatalf("trash lists %q", got)
	}
	for _, p := range []string{"a.txt", "dir/b.txt", "dir/sub/c.txt"} {
		tp := filepath.Join(trash, p)
		mustEqual(t, "trash "+p, readFile(t, tp), files[p])
		if got := xattr(t, tp, "user.evofs.path"); got != p {
			t.Errorf("%s: user.evofs.path %q", p, got)
		}
		if got := xattr(t, tp, "user.evofs.file_id"); got != ids[p] {
			t.Errorf("%s: file_id %s, want %s", p, got, ids[p])
		}
	}

	// another client deletes a file: the delta poll (its usual two
	// requests) brings it to the trash, which then lists it with no request
	m.ts.DeleteFile(m.ts.Org, m.ts.Workspace, "other.txt")
	m.ts.ResetRequests()
	if err := m.core.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := m.ts.Requests(emulator.OpAny); n > 2 {
		t.Errorf("a poll made %d requests, want <= 2", n)
	}
	m.ts.ResetRequests()
	if got := names(t, trash); !slices.Equal(got, []string{"a.txt", "dir", "other.txt"}) {
		t.Fatalf("trash after another client's delete lists %q", got)
	}
	if n := m.ts.Requests(emulator.OpAny); n != 0 {
		t.Errorf("listing the trash after a poll made %d requests, want 0", n)
	}

	wantErrno(t, "mv from the trash elsewhere", os.Rename(filepath.Join(trash, "a.txt"), m.path("elsewhere.txt")), syscall.EINVAL)
	if err := os.Rename(filepath.Join(trash, "a.txt"), m.path("a.txt")); err != nil {
		t.Fatalf("mv out of the trash: %v", err)
	}
	mustEqual(t, "restored a.txt", readFile(t, m.path("a.txt")), files["a.txt"])
	if id, _ := m.waitRemote("a.txt", files["a.txt"]); id != ids["a.txt"] {
		t.Errorf("a.txt restored as %s, want its own id %s", id, ids["a.txt"])
	}
	// it is an ordinary file at once: writable, published as a new version of itself
	f, err := os.OpenFile(m.path("a.txt"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("open restored file for writing: %v", err)
	}
	f.Write([]byte("more"))
	f.Close()
	m.drain()
	if id, _ := m.waitRemote("a.txt", append(slices.Clone(files["a.txt"]), "more"...)); id != ids["a.txt"] {
		t.Errorf("writing the restored file made a new file %s", id)
	}
	if got := len(m.serviceVersions(ids["a.txt"])); got != 2 {
		t.Errorf("restored a.txt has %d versions, want 2", got)
	}

	if err := os.Rename(filepath.Join(trash, "dir"), m.path("dir")); err != nil {
		t.Fatalf("mv a folder out of the trash: %v", err)
	}
	for _, p := range []string{"dir/b.txt", "dir/sub/c.txt"} {
		mustEqual(t, "restored "+p, readFile(t, m.path(p)), files[p])
		if id, _ := m.waitRemote(p, files[p]); id != ids[p] {
			t.Errorf("%s restored as %s, want %s", p, id, ids[p])
		}
	}
	if got := names(t, m.path("dir")); !slices.Equal(got, []string{"b.txt", "sub"}) {
		t.Errorf("restored dir lists %q", got)
	}
	if got := names(t, trash); !slices.Equal(got, []string{"other.txt"}) {
		t.Errorf("trash after restores lists %q", got)
	}

	out, err := exec.Command(evofsBinary(t), "restore", m.dir, "other.txt").CombinedOutput()
	if err != nil {
		t.Fatalf("evofs restore: %v %s", err, out)
	}
	mustEqual(t, "other.txt", readFile(t, m.path("other.txt")), files["other.txt"])
	m.waitRemote("other.txt", files["other.txt"])
}

// A restore onto a path that is taken, here or on the service (409), is
// EEXIST and changes nothing on either side.
func TestTrashRestoreTaken(t *testing.T) {
	m := mountT(t, mountOpts{})
	writeFile(t, m.path("a.txt"), []byte("old"))
	writeFile(t, m.path("b.txt"), []byte("mine"))
	m.drain()
	oldID, _ := m.waitRemote("a.txt", []byte("old"))
	m.waitRemote("b.txt", []byte("mine"))
	for _, p := range []string{"a.txt", "b.txt"} {
		if err := os.Remove(m.path(p)); err != nil {
			t.Fatal(err)
		}
		m.waitRemoteGone(p)
	}
	writeFile(t, m.path("a.txt"), []byte("new"))
	m.drain()
	newID, _ := m.waitRemote("a.txt", []byte("new"))
	// taken on the service by a file this mount has not seen (no polling)
	m.ts.PutFile(m.ts.Org, m.ts.Workspace, "b.txt", []byte("theirs"))

	m.ts.ResetRequests()
	wantErrno(t, "restore onto a local file", os.Rename(m.path(".evofs/trash/a.txt"), m.path("a.txt")), syscall.EEXIST)
	if n := m.ts.Requests(emulator.OpRestore); n != 0 {
		t.Errorf("a restore onto a known file made %d restore requests", n)
	}
	wantErrno(t, "restore onto a file only the service knows", os.Rename(m.path(".evofs/trash/b.txt"), m.path("b.txt")), syscall.EEXIST)
	if n := m.ts.Requests(emulator.OpRestore); n != 1 {
		t.Errorf("%d restore requests, want 1", n)
	}
	out, err := exec.Command(evofsBinary(t), "restore", m.dir, "a.txt").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another file now lives at that path") {
		t.Errorf("evofs restore onto a taken path: %v %q", err, out)
	}

	mustEqual(t, "a.txt", readFile(t, m.path("a.txt")), []byte("new"))
	if id, _ := m.waitRemote("a.txt", []byte("new")); id != newID {
		t.Errorf("a.txt is now %s, want %s", id, newID)
	}
	m.waitRemote("b.txt", []byte("theirs"))
	mustEqual(t, "trash a.txt", readFile(t, m.path(".evofs/trash/a.txt")), []byte("old"))
	mustEqual(t, "trash b.txt", readFile(t, m.path(".evofs/trash/b.txt")), []byte("mine"))
	if got := xattr(t, m.path(".evofs/trash/a.txt"), "user.evofs.file_id"); got != oldID {
		t.Errorf("trash a.txt is %s, want %s", got, oldID)
	}
}
