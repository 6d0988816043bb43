package integration

// CLI conventions on the real binary: version, flags after the mountpoint,
// size suffixes, usage exit codes, --daemon detached from the caller's
// stderr, log rotation on SIGHUP, sd_notify.

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"evofs/remote/emulator"
)

// TestCLIVersionAndUsage: `evofs version` and `--version` name the Go
// version; usage errors exit 2, with one sentence.
func TestCLIVersionAndUsage(t *testing.T) {
	bin := evofsBinary(t)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || !regexp.MustCompile(`^evofs \S+ \(.*go1\.\d+`).Match(out) {
			t.Errorf("evofs %v: %q, %v", args, out, err)
		}
	}
	for _, args := range [][]string{{"mount"}, {"frobnicate"}, {"mount", "--no-such-flag", "x"}, {"mount", "--cache-size", "10X", t.TempDir()}} {
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.HasPrefix(stderr.String(), "evofs: ") {
			t.Errorf("evofs %v: exit %d (%v), stderr %q; want 2 and a sentence", args, code, err, stderr.String())
		}
	}
	out, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil || !bytes.Contains(out, []byte("evofs")) {
		t.Errorf("completion bash: %v, %d bytes", err, len(out))
	}
}

// TestCLIDaemonLogsSighupAndNotify: `evofs mount MNT --daemon ...` (flags
// after the mountpoint, a size with a suffix) returns at once even when
// its stdout and stderr are a pipe the caller reads to the end (as in
// $(...)); it says where it logs (evofs.log in the cache dir), tells a
// notify socket READY=1, reopens its rotated log on SIGHUP and keeps
// serving, and says STOPPING=1 on SIGTERM.
func TestCLIDaemonLogsSighupAndNotify(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	sockPath := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	cmd := exec.Command(evofsBinary(t), "mount", mp, "--daemon", "--host", ts.URL, "--org", ts.Org.String(),
		"--workspace", ts.Workspace.String(), "--cache-dir", cacheDir, "--cache-size", "512Mi", "--log-level", "debug",
		"--write-back-delay", "0s")
	cmd.Env = childEnv(t, "EVO_TOKEN="+ts.Token, "NOTIFY_SOCKET="+sockPath)
	t.Cleanup(func() { detach(mp) })
	done := make(chan []byte, 1)
	go func() {
		out, _ := cmd.CombinedOutput() // returns once every writer of the pipe is gone
		done <- out
	}()
	var out []byte
	select {
	case out = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("evofs mount --daemon kept the caller's pipe open")
	}
	if cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("mount --daemon: exit %d: %s", cmd.ProcessState.ExitCode(), out)
	}
	logPath := filepath.Join(cacheDir, "evofs.log")
	if !strings.Contains(string(out), "log in "+logPath) {
		t.Errorf("mount --daemon output %q does not say where it logs (%s)", out, logPath)
	}
	if !isMounted(mp) {
		t.Fatal("not mounted after mount --daemon returned")
	}
	readNotify := func(want string) {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(60 * time.Second))
		buf := make([]byte, 256)
		n, err := sock.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("notify socket: %q, %v; want %q", buf[:n], err, want)
		}
	}
	readNotify("READY=1")
	pid := daemonPid(t, cacheDir)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // only if the test failed before SIGTERM

	// logrotate: move the file away, SIGHUP; the mount keeps serving and
	// logs into a new file at the same path.
	if !eventually(t, 10*time.Second, func() bool { st, err := os.Stat(logPath); return err == nil && st.Size() > 0 }) {
		t.Fatalf("nothing logged to %s", logPath)
	}
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	body := randomBytes(51, 300<<10)
	writeIn(t, mp, "after-hup.bin", body)
	waitServed(t, ts, "after-hup.bin", body, 30*time.Second)
	if !eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte("log file reopened"))
	}) {
		t.Fatalf("no new %s after SIGHUP", logPath)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	readNotify("STOPPING=1")
	if !eventually(t, 60*time.Second, func() bool { return !isMounted(mp) && syscall.Kill(pid, 0) != nil }) {
		t.Fatal("SIGTERM: still mounted or running")
	}
}

// daemonPid reads the daemon's pid from its cache dir lock.
func daemonPid(t *testing.T, cacheDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cacheDir, "lock"))
	m := regexp.MustCompile(`pid (\d+)`).FindSubmatch(b)
	if err != nil || m == nil {
		t.Fatalf("cache dir lock: %q, %v", b, err)
	}
	var pid int
	for _, c := range m[1] {
		pid = pid*10 + int(c-'0')
	}
	return pid
}
