package integration

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Real programs on the mount. They run as separate processes with their
// working directory outside the mount (go-fuse deadlock note 1a) and get
// the mount path as an argument.

func runProgram(t *testing.T, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed", name)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "GIT_CONFIG_NOSYSTEM=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("%s %s hung\n%s", name, strings.Join(args, " "), out.String())
	}
	return out.String()
}

func TestProgramSedInPlace(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: 100 * time.Millisecond})
	writeFile(t, m.path("conf.ini"), []byte("mode=old\nkeep=1\n"))
	id, ver := m.waitRemote("conf.ini", []byte("mode=old\nkeep=1\n"))
	runProgram(t, "sed", "-i", "s/old/new/", m.path("conf.ini"))
	want := []byte("mode=new\nkeep=1\n")
	mustEqual(t, "after sed -i", readFile(t, m.path("conf.ini")), want)
	id2, ver2 := m.waitRemote("conf.ini", want)
	if id2 != id || ver2 == ver {
		t.Fatalf("sed -i: id %s→%s version %s→%s", id, id2, ver, ver2)
	}
}

func TestProgramVimSave(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: 100 * time.Millisecond})
	writeFile(t, m.path("notes.md"), []byte("line one\n"))
	id, ver := m.waitRemote("notes.md", []byte("line one\n"))
	runProgram(t, "vim", "-u", "NONE", "-N", "-E", "-s", "-c", "set backup writebackup backupcopy=no", "-c", "normal Goline two", "-c", "wq", m.path("notes.md"))
	want := []byte("line one\nline two\n")
	mustEqual(t, "after vim", readFile(t, m.path("notes.md")), want)
	id2, ver2 := m.waitRemote("notes.md", want)
	if id2 != id || ver2 == ver {
		t.Fatalf("vim save: id %s→%s version %s→%s", id, id2, ver, ver2)
	}
	m.drain()
	list, err := m.client.ListAll(t.Context(), listAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range list {
		if f.FullPath() != "notes.md" {
			t.Errorf("vim left %s on the service", f.FullPath())
		}
	}
}

func TestProgramGitRepository(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: 200 * time.Millisecond})
	repo := m.path("project")
	git := func(args ...string) string {
		return runProgram(t, "git", append([]string{"-C", repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	}
	if err := os.Mkdir(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	git("init", "-q")
	writeFile(t, m.path("project/README"), []byte("hello\n"))
	os.MkdirAll(m.path("project/src"), 0o755)
	writeFile(t, m.path("project/src/main.go"), []byte("package main\n"))
	git("add", "-A")
	git("commit", "-q", "-m", "first")
	writeFile(t, m.path("project/README"), []byte("hello again\n"))
	git("commit", "-q", "-am", "second")
	if out := git("status", "--porcelain"); strings.TrimSpace(out) != "" {
		t.Fatalf("git status not clean:\n%s", out)
	}
	m.unmount()

	// A fresh mount of the same workspace (empty cache) holds a sound repository.
	b := mountOn(t, m.ts, mountOpts{})
	repo = b.path("project")
	git("fsck", "--no-progress")
	if log := git("log", "--format=%s"); strings.Fields(log)[0] != "second" || len(strings.Fields(log)) != 2 {
		t.Fatalf("git log on a fresh mount:\n%s", log)
	}
	mustEqual(t, "README", readFile(t, b.path("project/README")), []byte("hello again\n"))
}
