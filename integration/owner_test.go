package integration

// Owner tests: one process per cache dir and per local data dir, and no
// failure path that leaves a mount behind (real evofs processes, real mounts).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"evofs/remote/emulator"
)

// refusedMount runs `evofs args...` that must fail at once: exit 1, a last
// "evofs: " line on stderr containing want, and mp mounted as before (no
// new mount; an existing one, live or dead, left alone).
func refusedMount(t *testing.T, name, mp string, env []string, want string, args ...string) {
	t.Helper()
	before := isMounted(mp)
	p := startEvofs(t, name, env, args...)
	if code := p.waitExit(60 * time.Second); code != 1 {
		t.Fatalf("%s: exit %d, want 1; stderr:\n%s", name, code, p.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "evofs: ") || !strings.Contains(last, want) {
		t.Fatalf("%s: stderr ends with %q, want a line with %q; all:\n%s", name, last, want, p.stderr.String())
	}
	if after := isMounted(mp); after != before {
		t.Fatalf("%s: refused, yet %s went from mounted=%v to mounted=%v", name, mp, before, after)
	}
}

// TestProcessCacheDirHasOneOwner: a second mount on the same cache dir is
// refused, naming the owner, and the first one still publishes every file
// it holds (nothing taken over from its journal).
func TestProcessCacheDirHasOneOwner(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, mp2, cacheDir := t.TempDir(), t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount#1", ts, mp, cacheDir, "--write-back-delay", "1h")
	files := map[string][]byte{"a.txt": []byte("first mount's file\n"), "big.bin": randomBytes(41, 3<<20+5)}
	for rel, d := range files {
		writeIn(t, mp, rel, d)
	}
	want := fmt.Sprintf("cache dir %s is in use by evofs (pid %d, mounted at %s)", cacheDir, p.cmd.Process.Pid, realPath(t, mp))
	refusedMount(t, "mount#2", mp2, []string{"EVO_TOKEN=" + ts.Token}, want,
		"mount", "--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String(),
		"--cache-dir", cacheDir, "--write-back-delay", "0s", mp2)
	for rel := range files {
		mustNotBeServed(t, ts, rel) // the refused mount published nothing
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)
	for rel, d := range files {
		waitServed(t, ts, rel, d, 10*time.Second)
	}
	// The lock of a process that is gone is free again.
	p = mountEvofs(t, "mount#3", ts, mp2, cacheDir)
	p.kill9()
	p = mountEvofs(t, "mount#4", ts, mp2, cacheDir)
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)
}

// TestProcessLocalDataDirHasOneOwner: two mounts of the local workspace on
// one data dir: the second is refused and no file of the first is lost.
func TestProcessLocalDataDirHasOneOwner(t *testing.T) {
	requireFUSE(t)
	mp, mp2, data := t.TempDir(), t.TempDir(), t.TempDir()
	local := func(name, mp, cacheDir string) *evofsProc {
		p := startEvofs(t, name, nil, "mount", "--local", "--local-data", data, "--cache-dir", cacheDir, "--write-back-delay", "0s", mp)
		p.mountpoint = mp
		p.waitMounted()
		return p
	}
	p := local("local#1", mp, t.TempDir())
	body := randomBytes(42, 1<<20+7)
	writeIn(t, mp, "kept.bin", body)
	want := fmt.Sprintf("data dir %s is in use by evofs (pid %d, mounted at %s)", data, p.cmd.Process.Pid, realPath(t, mp))
	refusedMount(t, "local#2", mp2, nil, want, "mount", "--local", "--local-data", data, "--cache-dir", t.TempDir(), mp2)
	writeIn(t, mp, "after.txt", []byte("written after the refusal\n"))
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)
	// A fresh cache: the bytes can only come from the data dir.
	p = local("local#3", mp2, t.TempDir())
	mustEqual(t, "kept.bin", readFile(t, filepath.Join(mp2, "kept.bin")), body)
	mustEqual(t, "after.txt", readFile(t, filepath.Join(mp2, "after.txt")), []byte("written after the refusal\n"))
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)
}

// TestProcessRefusesBadMountpoints: a file, a folder that is already a
// mount (live or dead) and a non-empty folder are refused before anything is
// mounted, and leave no mount behind; --allow-non-empty mounts over files.
func TestProcessRefusesBadMountpoints(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	env := []string{"EVO_TOKEN=" + ts.Token}
	args := func(mp string, extra ...string) []string {
		a := []string{"mount", "--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String(), "--cache-dir", t.TempDir()}
		return append(append(a, extra...), mp)
	}
	file := filepath.Join(t.TempDir(), "not-a-dir.txt")
	writeFile(t, file, []byte("a file\n"))
	refusedMount(t, "mount(file)", file, env, "is not a directory", args(file)...)
	if b, err := os.ReadFile(file); err != nil || string(b) != "a file\n" {
		t.Fatalf("the file under a refused mount: %q, %v", b, err)
	}

	full := t.TempDir()
	writeFile(t, filepath.Join(full, "mine.txt"), []byte("hidden by a mount\n"))
	refusedMount(t, "mount(non-empty)", full, env, "is not empty", args(full)...)

	mp := t.TempDir()
	p := mountEvofs(t, "mount(live)", ts, mp, t.TempDir())
	writeIn(t, mp, "live.txt", []byte("live mount\n"))
	refusedMount(t, "mount(over a mount)", mp, env, "is already a mount", args(mp, "--allow-non-empty")...)
	mustEqual(t, "the first mount still serves", readFile(t, filepath.Join(mp, "live.txt")), []byte("live mount\n"))
	p.killOnly() // leaves a dead mount: ENOTCONN
	refusedMount(t, "mount(dead)", mp, env, "is a dead mount", args(mp)...)
	p.detachDead()

	p = startEvofs(t, "mount(allow-non-empty)", env, args(full, "--allow-non-empty")...)
	p.mountpoint = full
	p.waitMounted()
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)
	mustEqual(t, "the folder's own file after unmount", readFile(t, filepath.Join(full, "mine.txt")), []byte("hidden by a mount\n"))
}

// TestProcessStderrOnClosedPipe: `evofs mount ... 2>&1 | tee log` and
// Ctrl-C: the pipe's reader is gone first, and evofs still unmounts and
// publishes everything (SIGPIPE never kills it).
func TestProcessStderrOnClosedPipe(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := newEvofsProc(t, "mount(piped)", []string{"EVO_TOKEN=" + ts.Token}, "mount", "--host", ts.URL, "--org", ts.Org.String(),
		"--workspace", ts.Workspace.String(), "--cache-dir", cacheDir, "--write-back-delay", "1h", "--log-level", "debug", mp)
	p.cmd.Stderr = w
	p.mountpoint = mp
	p.start()
	w.Close()
	p.waitMounted()
	files := map[string][]byte{"one.txt": []byte("published after the pipe closed\n"), "two.bin": randomBytes(43, 2<<20)}
	for rel, d := range files {
		writeIn(t, mp, rel, d)
	}
	r.Close() // the reader (tee) is gone; every later log line hits EPIPE
	p.signal(syscall.SIGINT)
	if code := p.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT with stderr on a closed pipe (%s), want 0", code, p.cmd.ProcessState)
	}
	if isMounted(mp) {
		t.Fatal("still mounted")
	}
	for rel, d := range files {
		waitServed(t, ts, rel, d, 10*time.Second)
	}
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if r == "" {
		return p
	}
	return r
}
