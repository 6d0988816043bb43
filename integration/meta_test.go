package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"evofs/remote/emulator"
)

// What programs set on files (times, modes, owners, symlinks, FIFOs) is
// kept by the mount across a remount with the same cache folder.

// remount unmounts m and mounts its workspace again on the same cache folder.
func remount(t *testing.T, m *testMount, cacheDir string) *testMount {
	t.Helper()
	m.unmount()
	return mountOn(t, m.ts, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
}

func TestMetaRsyncTwiceAcrossRemount(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
	src := t.TempDir()
	const files = 60
	for i := range files {
		p := filepath.Join(src, fmt.Sprintf("d%d/sub/f%02d.txt", i%4, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.Repeat("x", i*37)), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			os.Chmod(p, 0o755)
		}
		at := time.Unix(1_600_000_000+int64(i), int64(i)*1000+7)
		os.Chtimes(p, at, at)
	}
	rsync := func() int {
		out := runProgram(t, "rsync", "-a", "--stats", src+"/", m.path("dst")+"/")
		re := regexp.MustCompile(`Number of regular files transferred: (\d+)`)
		g := re.FindStringSubmatch(out)
		if g == nil {
			t.Fatalf("no transfer count in rsync's output:\n%s", out)
		}
		var n int
		fmt.Sscan(g[1], &n)
		return n
	}
	if n := rsync(); n != files {
		t.Fatalf("first rsync sent %d files, want %d", n, files)
	}
	m = remount(t, m, cacheDir)
	writes := func() int {
		return m.ts.Requests(emulator.OpUpsertByPath) + m.ts.Requests(emulator.OpUpdateByID) + m.ts.Requests(emulator.OpDeleteByID)
	}
	before := writes()
	if n := rsync(); n != 0 {
		t.Fatalf("rsync after a remount sent %d files again, want 0", n)
	}
	m.drain()
	if w := writes() - before; w != 0 {
		t.Fatalf("the second rsync made %d changes on the service", w)
	}
	var st unix.Stat_t
	if err := unix.Stat(m.path("dst/d1/sub/f05.txt"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o755 || st.Mtim.Sec != 1_600_000_005 || st.Mtim.Nsec != 5007 {
		t.Fatalf("after remount: mode %o mtime %d.%09d", st.Mode&0o7777, st.Mtim.Sec, st.Mtim.Nsec)
	}
}

func TestMetaCpPreserveTouchAndExec(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
	src := filepath.Join(t.TempDir(), "data.csv")
	os.WriteFile(src, []byte("a,b\n"), 0o640)
	old := time.Unix(1_234_567_890, 123456789)
	os.Chtimes(src, old, old)
	runProgram(t, "cp", "-p", src, m.path("data.csv"))

	script := m.path("run.sh")
	writeFile(t, script, []byte("#!/bin/sh\necho ran-ok\n"))
	runProgram(t, "chmod", "+x", script)
	// utimensat with UTIME_OMIT for atime and an explicit mtime
	set := time.Unix(1_500_000_000, 42)
	ts := []unix.Timespec{{Sec: 0, Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(set.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, m.path("data.csv"), []unix.Timespec{{Sec: 0, Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(old.UnixNano())}, 0); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("run.sh", []byte("#!/bin/sh\necho ran-ok\n"))
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, script, ts, 0); err != nil {
		t.Fatal(err)
	}
	// an edit keeps the exec bit
	writeFile(t, script, []byte("#!/bin/sh\necho ran-ok-2\n"))
	m.waitRemote("run.sh", []byte("#!/bin/sh\necho ran-ok-2\n"))

	m = remount(t, m, cacheDir)
	var st unix.Stat_t
	if err := unix.Stat(m.path("data.csv"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o640 || st.Mtim.Sec != old.Unix() || st.Mtim.Nsec != int64(old.Nanosecond()) {
		t.Fatalf("cp -p across a remount: mode %o mtime %d.%09d, want 0640 %d.%09d", st.Mode&0o7777, st.Mtim.Sec, st.Mtim.Nsec, old.Unix(), old.Nanosecond())
	}
	if st.Atim.Sec != old.Unix() {
		t.Fatalf("UTIME_OMIT changed atime: %d, want %d", st.Atim.Sec, old.Unix())
	}
	if err := unix.Stat(m.path("run.sh"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o111 == 0 {
		t.Fatalf("exec bit lost across an edit and a remount: %o", st.Mode)
	}
	if out := runProgram(t, "sh", "-c", m.path("run.sh")); strings.TrimSpace(out) != "ran-ok-2" {
		t.Fatalf("script output %q", out)
	}
	// a rename keeps the mode
	if err := os.Rename(m.path("run.sh"), m.path("moved.sh")); err != nil {
		t.Fatal(err)
	}
	m = remount(t, m, cacheDir)
	if fi, err := os.Stat(m.path("moved.sh")); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("renamed script after a remount: %v %v", fi, err)
	}
}

func TestMetaCreateModeAndUmask(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: 50 * time.Millisecond})
	old := unix.Umask(0o027)
	defer unix.Umask(old)
	f, err := os.OpenFile(m.path("secret"), os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Mkdir(m.path("private"), 0o777); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(m.path("secret")); fi.Mode().Perm() != 0o640 {
		t.Fatalf("create 0666 under umask 027: %o", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(m.path("private")); fi.Mode().Perm() != 0o750 {
		t.Fatalf("mkdir 0777 under umask 027: %o", fi.Mode().Perm())
	}
	if err := unix.Chmod(m.path("secret"), 0o4711); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(m.path("secret")); fi.Mode()&(os.ModePerm|os.ModeSetuid) != 0o711|os.ModeSetuid {
		t.Fatalf("chmod 4711: %v", fi.Mode())
	}
}

func TestMetaSymlinkAndFIFOAcrossRemount(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
	os.Mkdir(m.path("d"), 0o755)
	writeFile(t, m.path("d/target.txt"), []byte("t"))
	if err := os.Symlink("target.txt", m.path("d/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(m.path("d/pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	runProgram(t, "ln", "-s", "../d/target.txt", m.path("rel"))
	if err := unix.Mknod(m.path("d/plain"), unix.S_IFREG|0o640, 0); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("d/plain", []byte{}) // a regular file from mknod is an ordinary, published file
	m.waitRemote("d/target.txt", []byte("t"))
	// lchown and utimensat(AT_SYMLINK_NOFOLLOW) change the link, not its
	// target; only root may give a link away (a user's lchown to another
	// uid is EPERM, as on a local disk).
	uid, gid := uint32(123), uint32(456)
	if os.Geteuid() != 0 {
		uid, gid = uint32(os.Getuid()), uint32(os.Getgid())
		if err := unix.Lchown(m.path("d/link"), 123, 456); !errors.Is(err, unix.EPERM) {
			t.Fatalf("lchown to another uid as a user: %v, want EPERM", err)
		}
	}
	if err := unix.Lchown(m.path("d/link"), int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	lt := time.Unix(1_000_000_000, 1)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, m.path("d/link"), []unix.Timespec{unix.NsecToTimespec(lt.UnixNano()), unix.NsecToTimespec(lt.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	m = remount(t, m, cacheDir)
	var lst unix.Stat_t
	if err := unix.Lstat(m.path("d/link"), &lst); err != nil || lst.Uid != uid || lst.Gid != gid || lst.Mtim.Sec != lt.Unix() || lst.Mtim.Nsec != 1 {
		t.Fatalf("symlink owner/time after remount: %d:%d %d.%d %v", lst.Uid, lst.Gid, lst.Mtim.Sec, lst.Mtim.Nsec, err)
	}
	if err := unix.Stat(m.path("d/target.txt"), &lst); err != nil || (os.Geteuid() == 0 && lst.Uid == 123) || lst.Mtim.Sec == lt.Unix() {
		t.Fatalf("the target changed with its link: %d %d %v", lst.Uid, lst.Mtim.Sec, err)
	}
	if got, err := os.Readlink(m.path("d/link")); err != nil || got != "target.txt" {
		t.Fatalf("readlink after remount: %q %v", got, err)
	}
	mustEqual(t, "through the link", readFile(t, m.path("d/link")), []byte("t"))
	fi, err := os.Lstat(m.path("d/pipe"))
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("fifo after remount: %v %v", fi, err)
	}
	// (the kernel serves user.* attributes of files and folders only, so
	// the "local" state of a symlink is seen through the core: vfs tests)
	m.drain()
	list, err := m.client.ListAll(t.Context(), listAll())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("local-only nodes reached the service: %d files, want d/target.txt and d/plain", len(list))
	}
	if fi, err := os.Stat(m.path("d/plain")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mknod S_IFREG 0640 after remount: %v %v", fi, err)
	}
	var st unix.Stat_t
	unix.Stat(m.path("d"), &st)
	if st.Nlink != 2 {
		t.Fatalf("nlink of a folder without subfolders: %d", st.Nlink)
	}
	unix.Stat(m.path(""), &st)
	if st.Nlink != 3 {
		t.Fatalf("nlink of the root with one subfolder: %d", st.Nlink)
	}
}

func TestMetaNameTooLong(t *testing.T) {
	m := mountT(t, mountOpts{})
	long := strings.Repeat("n", 256)
	_, err := os.Create(m.path(long))
	if !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("create of a 256-character name: %v, want ENAMETOOLONG", err)
	}
	if err := os.Mkdir(m.path(long), 0o755); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("mkdir: %v", err)
	}
	if _, err := os.Stat(m.path(long)); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("stat: %v", err)
	}
	if err := os.Symlink("x", m.path(long)); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("symlink: %v", err)
	}
	writeFile(t, m.path("a"), []byte("a"))
	if err := os.Link(m.path("a"), m.path("b")); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("hard link: %v, want EPERM", err)
	}
}

// runAs runs a program as another user (setpriv) and returns its output and error.
func runAs(t *testing.T, uid int, args ...string) (string, error) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv is not installed")
	}
	id := fmt.Sprint(uid)
	cmd := exec.Command(setpriv, append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--"}, args...)...)
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMetaAllowOtherEnforcesModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as a second user")
	}
	m := mountT(t, mountOpts{allowOther: true, writeBackDelay: 50 * time.Millisecond})
	if err := os.Chmod(filepath.Dir(m.dir), 0o755); err != nil { // t.TempDir is 0700
		t.Fatal(err)
	}
	const nobody = 65534
	writeFile(t, m.path("public"), []byte("pub"))
	writeFile(t, m.path("private"), []byte("priv"))
	os.Chmod(m.path("public"), 0o644)
	os.Chmod(m.path("private"), 0o600)
	if out, err := runAs(t, nobody, "cat", m.path("public")); err != nil || out != "pub" {
		t.Fatalf("a second user reading a 0644 file: %q %v", out, err)
	}
	if out, err := runAs(t, nobody, "cat", m.path("private")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("a second user reading a 0600 file: %q %v, want refused", out, err)
	}
	if out, err := runAs(t, nobody, "touch", m.path("mine")); err == nil {
		t.Fatalf("a second user creating in a 0755 root-owned folder: %q, want refused", out)
	}
	// a sticky shared folder: anyone creates, only owners delete
	if err := os.Mkdir(m.path("shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(m.path("shared"), 0o1777); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("shared/roots"), []byte("r"))
	os.Chmod(m.path("shared/roots"), 0o666)
	if out, err := runAs(t, nobody, "sh", "-c", "echo n > "+m.path("shared/theirs")); err != nil {
		t.Fatalf("a second user creating in a sticky 1777 folder: %q %v", out, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(m.path("shared/theirs"), &st); err != nil || st.Uid != nobody || st.Gid != nobody {
		t.Fatalf("owner of a file the second user made: %d:%d %v", st.Uid, st.Gid, err)
	}
	if out, err := runAs(t, nobody, "rm", "-f", m.path("shared/roots")); err == nil {
		t.Fatalf("a second user deleting root's file in a sticky folder: %q, want refused", out)
	}
	if out, err := runAs(t, nobody, "chown", "0", m.path("shared/theirs")); err == nil {
		t.Fatalf("a non-root chown: %q, want EPERM", out)
	}
	if _, err := os.Stat(m.path("shared/roots")); err != nil {
		t.Fatalf("root's file: %v", err)
	}
}

func TestMetaGitCloneAndTarAcrossRemount(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
	src := t.TempDir()
	git := func(dir string, args ...string) string {
		return runProgram(t, "git", append([]string{"-C", dir, "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	}
	git(src, "init", "-q")
	os.WriteFile(filepath.Join(src, "build.sh"), []byte("#!/bin/sh\necho built\n"), 0o755)
	os.WriteFile(filepath.Join(src, "README"), []byte("hello\n"), 0o644)
	os.Symlink("README", filepath.Join(src, "LINK"))
	git(src, "add", "-A")
	git(src, "commit", "-q", "-m", "first")
	runProgram(t, "git", "clone", "-q", src, m.path("clone"))
	if out := git(m.path("clone"), "status", "--porcelain"); strings.TrimSpace(out) != "" {
		t.Fatalf("git status after clone:\n%s", out)
	}
	// tar xpf keeps times and modes
	arch := filepath.Join(t.TempDir(), "a.tar")
	tsrc := t.TempDir()
	os.WriteFile(filepath.Join(tsrc, "x.bin"), []byte("x"), 0o700)
	old := time.Unix(1_111_111_111, 0)
	os.Chtimes(filepath.Join(tsrc, "x.bin"), old, old)
	runProgram(t, "tar", "-C", tsrc, "-cf", arch, "x.bin")
	os.Mkdir(m.path("untar"), 0o755)
	runProgram(t, "tar", "-C", m.path("untar"), "-xpf", arch)
	m.drain()

	m = remount(t, m, cacheDir)
	if out := git(m.path("clone"), "status", "--porcelain"); strings.TrimSpace(out) != "" {
		t.Fatalf("git status after a remount:\n%s", out)
	}
	if got, err := os.Readlink(m.path("clone/LINK")); err != nil || got != "README" {
		t.Fatalf("the clone's symlink after a remount: %q %v", got, err)
	}
	if out := runProgram(t, "sh", "-c", m.path("clone/build.sh")); strings.TrimSpace(out) != "built" {
		t.Fatalf("the clone's script: %q", out)
	}
	fi, err := os.Stat(m.path("untar/x.bin"))
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.ModTime().Equal(old) {
		t.Fatalf("tar xpf after a remount: %v %v", fi, err)
	}
}

func TestMetaMakeRebuildsNothingAfterRemount(t *testing.T) {
	cacheDir := t.TempDir()
	m := mountT(t, mountOpts{cacheDir: cacheDir, writeBackDelay: 50 * time.Millisecond})
	os.Mkdir(m.path("proj"), 0o755)
	writeFile(t, m.path("proj/Makefile"), []byte("out.txt: in.txt\n\tcp in.txt out.txt\n"))
	// the target reaches the service before its input (so the service's
	// modified_at alone would call it stale), but its time says it is newer
	writeFile(t, m.path("proj/out.txt"), []byte("source\n"))
	m.waitRemote("proj/out.txt", []byte("source\n"))
	writeFile(t, m.path("proj/in.txt"), []byte("source\n"))
	m.waitRemote("proj/in.txt", []byte("source\n"))
	now := time.Now()
	os.Chtimes(m.path("proj/in.txt"), now.Add(-time.Hour), now.Add(-time.Hour))
	os.Chtimes(m.path("proj/out.txt"), now.Add(-30*time.Minute), now.Add(-30*time.Minute))
	runProgram(t, "make", "-s", "-q", "-C", m.path("proj"))
	m = remount(t, m, cacheDir)
	runProgram(t, "make", "-s", "-q", "-C", m.path("proj")) // exits 1 if out.txt must be rebuilt
}

// The binary: --file-mode/--dir-mode for what was never chmod-ed, and what
// was set before a kill -9 is there after the restart (published and
// pending files alike).
func TestProcessKill9KeepsMetadata(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	ts.PutFile(ts.Org, ts.Workspace, "from/service.txt", []byte("s"))
	mp, cacheDir := t.TempDir(), t.TempDir()
	args := []string{"--write-back-delay", "1h", "--file-mode", "0600", "--dir-mode", "0700"}
	p := mountEvofs(t, "mount(meta)", ts, mp, cacheDir, args...)
	if fi, err := os.Stat(filepath.Join(mp, "from/service.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--file-mode 0600: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(mp, "from")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("--dir-mode 0700: %v %v", fi, err)
	}
	set := time.Unix(1_300_000_000, 999)
	chm := func(rel string, mode uint32) {
		if err := unix.Chmod(filepath.Join(mp, rel), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(mp, rel), set, set); err != nil {
			t.Fatal(err)
		}
	}
	chm("from/service.txt", 0o751)
	writeIn(t, mp, "pending.sh", []byte("#!/bin/sh\n"))
	chm("pending.sh", 0o755)
	if err := os.Symlink("pending.sh", filepath.Join(mp, "ln")); err != nil {
		t.Fatal(err)
	}
	p.kill9()

	p = mountEvofs(t, "mount(after kill)", ts, mp, cacheDir, args...)
	for _, c := range []struct {
		rel  string
		mode os.FileMode
	}{{"from/service.txt", 0o751}, {"pending.sh", 0o755}} {
		fi, err := os.Stat(filepath.Join(mp, c.rel))
		if err != nil || fi.Mode().Perm() != c.mode || !fi.ModTime().Equal(set) {
			t.Fatalf("%s after kill -9: %v %v, want %o at %v", c.rel, fi, err, c.mode, set)
		}
	}
	if got, err := os.Readlink(filepath.Join(mp, "ln")); err != nil || got != "pending.sh" {
		t.Fatalf("symlink after kill -9: %q %v", got, err)
	}
	if !eventually(t, 10*time.Second, func() bool { return umount(mp, false) == nil }) {
		t.Fatalf("umount %s kept failing", mp)
	}
	p.expectCleanExit(60 * time.Second)
}
