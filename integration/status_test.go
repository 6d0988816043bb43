package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"evofs/fusefs/control"
	"evofs/remote/emulator"
)

// statusCode runs `evofs status args...` and returns its exit code and output.
func statusCode(t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(evofsBinary(t), append([]string{"status"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		t.Fatalf("evofs status %v: %v", args, err)
	}
	return 0, out.String()
}

// A thousand files written while the service is down: status (text and
// JSON, through the control socket) lists them all, --wait says the
// service is unreachable, then publishes everything once it is back; a
// stalled upload times out and a refused one fails, each with its code.
func TestProcessStatusThousandQueuedAndWaitCodes(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount", ts, mp, cacheDir, "--write-back-delay", "0s")

	if fi, err := os.Stat(filepath.Join(cacheDir, control.SocketName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v; want mode 0600", fi, err)
	}
	ts.FailRate(emulator.OpAny, 1, emulator.Fault{Drop: true})
	if !eventually(t, 20*time.Second, func() bool { return !statusJSON(t, mp).Online }) {
		t.Fatal("status never said offline")
	}
	const n = 1000
	want := map[string][]byte{}
	for i := range n {
		rel := fmt.Sprintf("q/f-%04d.txt", i)
		want[rel] = randomBytes(int64(100+i), 100+i)
		writeIn(t, mp, rel, want[rel])
	}
	st := statusJSON(t, mp)
	if len(st.Files) != n || st.Pending+st.Uploading != n || st.Online || st.OfflineReason == "" {
		t.Fatalf("status --json: %d files, %d pending, %d uploading, online %v (%q); want %d queued offline",
			len(st.Files), st.Pending, st.Uploading, st.Online, st.OfflineReason, n)
	}
	out := runStatusCmd(t, mp)
	if !strings.Contains(out, "offline") || !strings.Contains(out, "q/f-0999.txt") || strings.Count(out, "\n") < n {
		t.Fatalf("status text lacks the offline note or files (%d lines):\n%s", strings.Count(out, "\n"), tail(out, 2000))
	}
	if code, out := statusCode(t, "--wait", "--timeout", "2s", mp); code != 3 {
		t.Fatalf("--wait offline: exit %d, want 3:\n%s", code, out)
	}

	ts.ClearFaults()
	if code, out := statusCode(t, "--wait", "--timeout", "3m", mp); code != 0 {
		t.Fatalf("--wait once back: exit %d, want 0:\n%s", code, out)
	}
	for rel, d := range want {
		waitServed(t, ts, rel, d, time.Second)
	}

	// Uploads answered 503: retried for ever, so the wait times out.
	ts.FailRate(emulator.OpPutBlob, 1, emulator.Fault{Status: 503})
	writeIn(t, mp, "stalled.txt", []byte("stalled"))
	if code, out := statusCode(t, "--wait", "--timeout", "1s", mp); code != 2 {
		t.Fatalf("--wait stalled: exit %d, want 2:\n%s", code, out)
	}
	// Refused for good: the publish fails.
	ts.ClearFaults()
	ts.FailRate(emulator.OpAny, 1, emulator.Fault{Status: 403})
	writeIn(t, mp, "stalled.txt", []byte("refused"))
	if code, out := statusCode(t, "--wait", "--timeout", "1m", mp); code != 1 {
		t.Fatalf("--wait refused: exit %d, want 1:\n%s", code, out)
	}
	ts.ClearFaults()
	if code, out := statusCode(t, "--wait", t.TempDir()); code != 3 {
		t.Fatalf("--wait on a plain folder: exit %d, want 3:\n%s", code, out)
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(60 * time.Second)
}
