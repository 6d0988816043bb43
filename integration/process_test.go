package integration

// Process tests run the evofs binary (built once by evofsBinary) as a child:
// the test process hosts the service and uses the mount with plain os calls,
// the child serves the mount. They cover what only a real process shows:
// signals, unmount by umount, kill -9 and resume from the journal, the status
// command, the embedded local service and `evofs serve` restarts.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"evofs/fusefs/control"
	"evofs/fusefs/vfs"
	"evofs/remote"
	"evofs/remote/emulator"
)

// evofsProc is one evofs child process.
type evofsProc struct {
	t          testing.TB
	name       string
	cmd        *exec.Cmd
	stdout     *syncWriter
	stderr     *syncWriter
	done       chan struct{} // closed when the process has exited
	mountpoint string        // detached at cleanup ("" for serve)
}

// childEnv is this process's environment without evofs settings (EVO_*,
// EVOFS_*) and with a private home and XDG dirs, so that a developer's saved
// login or profiles never reach a child; then env.
func childEnv(t testing.TB, env ...string) []string {
	home := t.TempDir()
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "EVO_"), strings.HasPrefix(k, "EVOFS_"),
			k == "HOME", strings.HasPrefix(k, "XDG_"):
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_CACHE_HOME="+filepath.Join(home, "cache"), "XDG_DATA_HOME="+filepath.Join(home, "data"))
	return append(out, env...)
}

// startEvofs starts `evofs args...` in childEnv(env) (see start).
func startEvofs(t testing.TB, name string, env []string, args ...string) *evofsProc {
	t.Helper()
	p := newEvofsProc(t, name, env, args...)
	p.start()
	return p
}

// newEvofsProc prepares `evofs args...` without starting it (p.start), so
// that a test can change where its output goes.
func newEvofsProc(t testing.TB, name string, env []string, args ...string) *evofsProc {
	t.Helper()
	bin := evofsBinary(t)
	p := &evofsProc{t: t, name: name, stdout: &syncWriter{}, stderr: &syncWriter{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = childEnv(t, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	return p
}

// start starts a prepared process; cleanup kills it if it still runs,
// detaches its mount and, on failure, logs its output.
func (p *evofsProc) start() {
	t, name := p.t, p.name
	t.Helper()
	// Die with the test binary rather than leave a daemon serving a temp dir.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s (pid %d) did not die after SIGKILL", p.name, p.cmd.Process.Pid)
			}
		}
		if p.mountpoint != "" {
			detach(p.mountpoint)
		}
		if t.Failed() {
			t.Logf("%s: %s\n--- stdout:\n%s\n--- stderr:\n%s", p.name, strings.Join(p.cmd.Args, " "),
				tail(p.stdout.String(), 4000), tail(p.stderr.String(), 12000))
		}
	})
}

func (p *evofsProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *evofsProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// waitExit waits up to d for the process to exit and returns its exit code
// (-1 when killed by a signal).
func (p *evofsProc) waitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %s", p.name, d)
		return 0
	}
}

// expectCleanExit waits for exit code 0 and for the mount to be gone.
func (p *evofsProc) expectCleanExit(d time.Duration) {
	p.t.Helper()
	if code := p.waitExit(d); code != 0 {
		p.t.Fatalf("%s exited with %d, want 0 (%s)", p.name, code, p.cmd.ProcessState)
	}
	if p.mountpoint != "" && isMounted(p.mountpoint) {
		p.t.Fatalf("%s exited but %s is still mounted", p.name, p.mountpoint)
	}
}

// kill9 kills the process with SIGKILL, waits for it and detaches the dead
// mount so the mountpoint can be used again.
func (p *evofsProc) kill9() {
	p.t.Helper()
	p.killOnly()
	p.detachDead()
}

// killOnly SIGKILLs the process and leaves its dead mount in place, so that
// programs still using it fail (ENOTCONN) rather than carry on writing into
// the directory underneath once it is detached.
func (p *evofsProc) killOnly() {
	p.t.Helper()
	p.cmd.Process.Kill()
	if code := p.waitExit(10 * time.Second); code != -1 {
		p.t.Logf("%s exited with %d before SIGKILL landed", p.name, code)
	}
}

// detachDead detaches the dead mount of a killed process.
func (p *evofsProc) detachDead() {
	p.t.Helper()
	if p.mountpoint != "" {
		detach(p.mountpoint)
		if !eventually(p.t, 10*time.Second, func() bool { return !isMounted(p.mountpoint) }) {
			p.t.Fatalf("%s: dead mount %s could not be detached", p.name, p.mountpoint)
		}
	}
}

// detach lazily unmounts dir; errors (not mounted) are ignored.
func detach(dir string) { umount(dir, true) }

// umount unmounts dir (lazily: detached now, gone once unused) the way its
// user may: umount2 as root, fusermount3 -u otherwise.
func umount(dir string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		return syscall.Unmount(dir, flags)
	}
	args := []string{"-u", "-q"}
	if lazy {
		args = append(args, "-z")
	}
	if out, err := exec.Command("fusermount3", append(args, dir)...).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 %v: %v: %s", args, err, out)
	}
	return nil
}

// isMounted reports whether dir is a mount point of this mount namespace.
func isMounted(dir string) bool {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == dir {
			return true
		}
	}
	return false
}

// newProcServer starts an in-process service whose Workspaces API lists the
// test workspace, as a hub lists the workspaces a user may mount.
func newProcServer(t testing.TB, o emulator.Options) *emulator.TestServer {
	if o.AzureBlobs == nil {
		o.AzureBlobs = azureBlobs
	}
	ts := emulator.NewTestServer(t, o)
	ts.AddWorkspace(ts.Org, ts.Workspace, "process-test")
	return ts
}

// mountEvofs runs `evofs mount` against ts on mountpoint mp with cacheDir
// and extra flags, and waits until the mount is up.
func mountEvofs(t testing.TB, name string, ts *emulator.TestServer, mp, cacheDir string, extra ...string) *evofsProc {
	t.Helper()
	args := []string{"mount", "--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String(),
		"--cache-dir", cacheDir, "--poll-interval", "1s"}
	args = append(append(args, extra...), mp)
	p := startEvofs(t, name, []string{"EVO_TOKEN=" + ts.Token}, args...)
	p.mountpoint = mp
	p.waitMounted()
	return p
}

// waitMounted waits until the child's mount shows in /proc/self/mountinfo
// and, where its stderr is ours to read, until it says it is mounted. The
// mount shows before go-fuse's own first request to it (its poll probe)
// is answered; a kill -9 while that request is in flight leaves a process
// that cannot exit until the FUSE connection is aborted.
func (p *evofsProc) waitMounted() {
	p.t.Helper()
	var exited bool
	ok := eventually(p.t, 30*time.Second, func() bool {
		if p.exited() {
			exited = true
			return true
		}
		said := p.cmd.Stderr != io.Writer(p.stderr) || strings.Contains(p.stderr.String(), "mounted; unmount with")
		return said && isMounted(p.mountpoint)
	})
	switch {
	case exited:
		p.t.Fatalf("%s exited (%s) before mounting %s", p.name, p.cmd.ProcessState, p.mountpoint)
	case !ok:
		p.t.Fatalf("%s: %s not mounted within 30s", p.name, p.mountpoint)
	}
}

// runStatusCmd runs `evofs status args...` and returns its stdout.
func runStatusCmd(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(evofsBinary(t), append([]string{"status"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("evofs status %v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// statusJSON runs `evofs status --json mp` and decodes it.
func statusJSON(t testing.TB, mp string) control.Report {
	t.Helper()
	out := runStatusCmd(t, "--json", mp)
	var st control.Report
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not a status report: %v\n%s", err, out)
	}
	return st
}

func jobFor(st control.Report, path string) (control.FileReport, bool) {
	for _, j := range st.Files {
		if j.Path == path {
			return j, true
		}
	}
	return control.FileReport{}, false
}

func xattrState(p string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, vfs.XattrState, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// waitServed polls the service until path holds want.
func waitServed(t testing.TB, ts *emulator.TestServer, path string, want []byte, d time.Duration) {
	t.Helper()
	var last string
	if !eventually(t, d, func() bool {
		got, _, v, err := ts.ReadFile(ts.Org, ts.Workspace, path)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("version %s: %d bytes sha %s, want %d bytes sha %s", v, len(got), sum(got), len(want), sum(want))
		return bytes.Equal(got, want)
	}) {
		t.Fatalf("%s not published with the expected bytes within %s: %s", path, d, last)
	}
}

func mustNotBeServed(t testing.TB, ts *emulator.TestServer, path string) {
	t.Helper()
	if _, _, v, err := ts.ReadFile(ts.Org, ts.Workspace, path); !errors.Is(err, emulator.ErrNotFound) {
		t.Fatalf("%s: want not on the service yet, got version %s (err %v)", path, v, err)
	}
}

func writeIn(t testing.TB, mp, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(mp, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, data)
}

// TestProcessSigtermAndUmountPublishPending: pending files (1 h write-back
// delay) are published before the daemon exits, whether it is stopped by
// SIGTERM or by umount.
func TestProcessSigtermAndUmountPublishPending(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{PublishDelay: 20 * time.Millisecond})
	mp, cacheDir := t.TempDir(), t.TempDir()

	files := map[string][]byte{
		"a.txt":          []byte("alpha\n"),
		"b.bin":          randomBytes(11, 100<<10),
		"dir/c.bin":      randomBytes(12, 3<<20+17),
		"dir/sub/d.bin":  randomBytes(13, 1),
		"e with space.x": randomBytes(14, 700<<10),
	}
	p := mountEvofs(t, "mount(sigterm)", ts, mp, cacheDir, "--write-back-delay", "1h")
	for rel, data := range files {
		writeIn(t, mp, rel, data)
	}
	for rel, data := range files {
		mustEqual(t, "read back "+rel, readFile(t, filepath.Join(mp, rel)), data)
		mustNotBeServed(t, ts, rel) // held by the 1 h delay
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)
	for rel, data := range files {
		got, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, rel)
		if err != nil {
			t.Fatalf("after SIGTERM: %s not published: %v", rel, err)
		}
		mustEqual(t, "published "+rel, got, data)
	}

	// Same cache, stopped by a plain umount: an overwrite and a new file.
	p2 := mountEvofs(t, "mount(umount)", ts, mp, cacheDir, "--write-back-delay", "1h")
	mustEqual(t, "remount read", readFile(t, filepath.Join(mp, "dir/c.bin")), files["dir/c.bin"])
	files["a.txt"] = []byte("alpha, second version\n")
	files["f.bin"] = randomBytes(15, 2<<20)
	writeIn(t, mp, "a.txt", files["a.txt"])
	writeIn(t, mp, "f.bin", files["f.bin"])
	mustNotBeServed(t, ts, "f.bin")
	if !eventually(t, 10*time.Second, func() bool { return umount(mp, false) == nil }) {
		t.Fatalf("umount %s kept failing", mp)
	}
	p2.expectCleanExit(60 * time.Second)
	for rel, data := range files {
		got, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, rel)
		if err != nil {
			t.Fatalf("after umount: %s not published: %v", rel, err)
		}
		mustEqual(t, "published "+rel, got, data)
	}
}

// TestProcessKill9WhileReopened: a file closed (held back by a 1 h
// write-back delay), then opened and written again, is still published
// after the daemon is killed while it is open: the close promised its bytes,
// and the restart publishes the staged file as the kill left it.
func TestProcessKill9WhileReopened(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount(reopened)", ts, mp, cacheDir, "--write-back-delay", "1h")
	first := []byte("saved and closed\n")
	writeIn(t, mp, "notes.txt", first)
	f, err := os.OpenFile(filepath.Join(mp, "notes.txt"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	more := []byte("appended while still open\n")
	if _, err := f.Write(more); err != nil {
		t.Fatal(err)
	}
	p.killOnly()
	f.Close() // ENOTCONN: the daemon is gone
	p.detachDead()
	mustNotBeServed(t, ts, "notes.txt")

	p = mountEvofs(t, "mount(after kill)", ts, mp, cacheDir, "--write-back-delay", "1h")
	waitServed(t, ts, "notes.txt", append(first, more...), 30*time.Second)
	if !eventually(t, 10*time.Second, func() bool { return umount(mp, false) == nil }) {
		t.Fatalf("umount %s kept failing", mp)
	}
	p.expectCleanExit(60 * time.Second)
}

// publishWatcher lists the workspace continuously and checks every version
// it sees against the one content each path may ever have, so a torn or
// wrong publish is caught even if a later version repairs it.
type publishWatcher struct {
	ts     *emulator.TestServer
	client *remote.Client
	want   map[string][]byte // immutable

	mu       sync.Mutex
	checked  map[string]string // path → version verified
	bad      []string
	scans    int
	stop     chan struct{}
	finished chan struct{}
}

func newPublishWatcher(t testing.TB, ts *emulator.TestServer, want map[string][]byte) *publishWatcher {
	client, err := remote.New(remote.Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace,
		Tokens: remote.StaticToken(ts.Token), Retry: remote.RetryPolicy{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	w := &publishWatcher{ts: ts, client: client, want: want, checked: map[string]string{},
		stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		for {
			w.scan()
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond): // polling the service, not synchronising
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *publishWatcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.finished
}

func (w *publishWatcher) scan() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := w.client.ListAll(ctx, remote.ListOptions{})
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scans++
	for _, m := range rows {
		p := strings.TrimPrefix(m.Path, "/") + m.Name
		want, ok := w.want[p]
		if !ok {
			if _, dup := w.checked[p]; !dup {
				w.checked[p] = string(m.VersionID)
				w.bad = append(w.bad, fmt.Sprintf("unexpected file %q (version %s, %d bytes)", p, m.VersionID, m.Size))
			}
			continue
		}
		if w.checked[p] == string(m.VersionID) {
			continue
		}
		got, _, v, err := w.ts.ReadFile(w.ts.Org, w.ts.Workspace, p)
		if err != nil {
			continue
		}
		if !bytes.Equal(got, want) {
			w.bad = append(w.bad, fmt.Sprintf("%s version %s: %d bytes sha %s, want %d bytes sha %s", p, v, len(got), sum(got), len(want), sum(want)))
		}
		w.checked[p] = v
	}
}

func (w *publishWatcher) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bad...)
}

// TestProcessKill9DuringPublishesResumes kills the daemon three times while
// it publishes 50 files (after k files, while a block upload is in flight,
// and while files are being written), restarts it on the same cache dir each
// time and checks that every file whose close(2) succeeded is published with
// exact bytes and that nothing wrong is ever visible on the service.
func TestProcessKill9DuringPublishesResumes(t *testing.T) {
	requireFUSE(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	ts := newProcServer(t, emulator.Options{PublishDelay: 20 * time.Millisecond, Seed: seed})
	mp, cacheDir := t.TempDir(), t.TempDir()

	const n = 50
	big := map[int]bool{12: true, 30: true}
	names := make([]string, n)
	datas := make([][]byte, n)
	want := map[string][]byte{}
	for i := range n {
		size := 0
		switch {
		case big[i]: // block uploads (> 16 MiB)
			size = 17<<20 + rng.Intn(5<<20)
		case i%3 == 0:
			size = 1 + rng.Intn(4<<10)
		case i%3 == 1:
			size = 4<<10 + rng.Intn(512<<10)
		default:
			size = 512<<10 + rng.Intn(1536<<10)
		}
		names[i] = fmt.Sprintf("f%02d.bin", i)
		if i%4 == 3 {
			names[i] = fmt.Sprintf("d%d/sub/f%02d.bin", i%3, i)
		}
		datas[i] = randomBytes(seed+int64(i), size)
		want[names[i]] = datas[i]
	}
	watch := newPublishWatcher(t, ts, want)

	var mu sync.Mutex
	closed := map[int]bool{} // close(2) returned 0: journaled, must be published
	markClosed := func(i int) {
		mu.Lock()
		closed[i] = true
		mu.Unlock()
	}
	writeOne := func(i int) error {
		p := filepath.Join(mp, filepath.FromSlash(names[i]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, datas[i], 0o644); err != nil {
			return err
		}
		markClosed(i)
		return nil
	}
	waitClosedPublished := func(phase string) {
		t.Helper()
		mu.Lock()
		idx := make([]int, 0, len(closed))
		for i := range closed {
			idx = append(idx, i)
		}
		mu.Unlock()
		sort.Ints(idx)
		var missing []string
		ok := eventually(t, 60*time.Second, func() bool {
			missing = missing[:0]
			for _, i := range idx {
				got, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, names[i])
				if err != nil || !bytes.Equal(got, datas[i]) {
					missing = append(missing, names[i])
				}
			}
			return len(missing) == 0
		})
		if !ok {
			t.Fatalf("%s: closed files not published within 60s: %v", phase, missing)
		}
		t.Logf("%s: all %d closed files published", phase, len(idx))
	}
	mount := func(name string) *evofsProc {
		return mountEvofs(t, name, ts, mp, cacheDir, "--write-back-delay", "0s")
	}
	next := 0

	// Round 1: kill right after the k-th close, publishes in flight.
	p := mount("mount#1")
	k := 4 + rng.Intn(7)
	for ; next <= k; next++ {
		if err := writeOne(next); err != nil {
			t.Fatalf("write %s: %v", names[next], err)
		}
	}
	p.kill9()
	onService := 0
	for i := range next {
		if _, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, names[i]); err == nil {
			onService++
		}
	}
	t.Logf("round 1: killed after %d files closed, %d of them already published", next, onService)
	p = mount("mount#2")
	waitClosedPublished("round 1")

	// Round 2: kill while a block upload is in flight (Put Block slowed down).
	ts.FailRate(emulator.OpPutBlock, 1, emulator.Fault{Latency: 300 * time.Millisecond})
	base := ts.Requests(emulator.OpPutBlock)
	for ; next <= 12; next++ {
		if err := writeOne(next); err != nil {
			t.Fatalf("write %s: %v", names[next], err)
		}
	}
	after := 1 + rng.Intn(3)
	if !eventually(t, 30*time.Second, func() bool { return ts.Requests(emulator.OpPutBlock) >= base+after }) {
		t.Fatalf("round 2: no block upload of %s started", names[12])
	}
	p.kill9()
	_, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, names[12])
	t.Logf("round 2: killed after %d Put Block requests (big file published before the kill: %v)", after, err == nil)
	ts.ClearFaults()
	p = mount("mount#3")
	waitClosedPublished("round 2")

	// Round 3: kill at a random moment while a writer keeps writing.
	stopAt := next + 3 + rng.Intn(8)
	progress := make(chan int, n)
	writerDone := make(chan error, 1)
	go func() {
		for i := next; i < 45; i++ {
			if err := writeOne(i); err != nil {
				writerDone <- fmt.Errorf("%s: %w", names[i], err)
				return
			}
			progress <- i
		}
		writerDone <- nil
	}()
	var werr error
wait:
	for {
		select {
		case i := <-progress:
			if i >= stopAt {
				break wait
			}
		case werr = <-writerDone:
			t.Fatalf("round 3: writer ended before the kill: %v", werr)
		}
	}
	// The writer must see the dead mount fail before it is detached:
	// otherwise its next files land in the directory underneath.
	p.killOnly()
	werr = <-writerDone
	p.detachDead()
	if left, _ := os.ReadDir(mp); len(left) != 0 {
		t.Fatalf("round 3: %d entries were written under the mount point", len(left))
	}
	mu.Lock()
	for next < n && closed[next] {
		next++
	}
	mu.Unlock()
	t.Logf("round 3: killed with %d files closed; the writer saw: %v", next, werr)
	p = mount("mount#4")
	waitClosedPublished("round 3")

	// The rest, written again from scratch where a write was cut, then SIGTERM.
	for i := next; i < n; i++ {
		if err := writeOne(i); err != nil {
			t.Fatalf("write %s: %v", names[i], err)
		}
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)
	waitClosedPublished("final")
	watch.close()
	watch.scan()
	if bad := watch.problems(); len(bad) > 0 {
		t.Fatalf("wrong content or names seen on the service:\n%s", strings.Join(bad, "\n"))
	}
	watch.mu.Lock()
	seen, scans := len(watch.checked), watch.scans
	watch.mu.Unlock()
	if seen != n {
		t.Fatalf("watcher saw %d files, want %d", seen, n)
	}
	t.Logf("watcher: %d scans, no wrong content", scans)
}

// TestProcessStatusShowsPending checks `evofs status` (human and --json) and
// the state xattr while publishes wait for the write-back delay, and while
// uploads fail, and that status is empty once they are published.
func TestProcessStatusShowsPending(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	mp, cacheDir := t.TempDir(), t.TempDir()

	// Held by the write-back delay.
	p := mountEvofs(t, "mount(delay)", ts, mp, cacheDir, "--write-back-delay", "1h")
	a, b := []byte("pending a\n"), randomBytes(21, 300<<10)
	writeIn(t, mp, "a.txt", a)
	writeIn(t, mp, "sub/b.bin", b)
	out := runStatusCmd(t, mp)
	for _, s := range []string{"STATE", "a.txt", "sub/b.bin", "pending"} {
		if !strings.Contains(out, s) {
			t.Fatalf("status output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "nothing pending") || strings.Contains(out, "offline") {
		t.Fatalf("status output:\n%s", out)
	}
	st := statusJSON(t, mp)
	if !st.Online || len(st.Files) != 2 || st.Pending != 2 {
		t.Fatalf("status: online %v, %d files, want online with 2: %+v", st.Online, len(st.Files), st)
	}
	for path, data := range map[string][]byte{"a.txt": a, "sub/b.bin": b} {
		j, ok := jobFor(st, path)
		if !ok || j.State != "pending" || j.SizeBytes != int64(len(data)) {
			t.Fatalf("job of %s: %+v (found %v), want pending of %d bytes", path, j, ok, len(data))
		}
		if s, err := xattrState(filepath.Join(mp, path)); err != nil || s != "pending" {
			t.Fatalf("%s: %s = %q, %v; want pending", path, vfs.XattrState, s, err)
		}
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)
	waitServed(t, ts, "a.txt", a, time.Second)
	waitServed(t, ts, "sub/b.bin", b, time.Second)

	// Uploads failing with 503: retried, visible as pending with an error.
	ts.FailRate(emulator.OpPutBlob, 1, emulator.Fault{Status: 503})
	p = mountEvofs(t, "mount(faults)", ts, mp, cacheDir, "--write-back-delay", "0s")
	if s, err := xattrState(filepath.Join(mp, "a.txt")); err != nil || s != "published" {
		t.Fatalf("a.txt after remount: state %q, %v; want published", s, err)
	}
	c := randomBytes(22, 64<<10)
	writeIn(t, mp, "c.bin", c)
	var j control.FileReport
	if !eventually(t, 20*time.Second, func() bool {
		var ok bool
		j, ok = jobFor(statusJSON(t, mp), "c.bin")
		return ok && j.Tries >= 1 && j.LastError != ""
	}) {
		t.Fatalf("c.bin never showed a failed try in status: %+v", j)
	}
	out = runStatusCmd(t, mp)
	if !strings.Contains(out, "c.bin") || strings.Contains(out, "nothing pending") {
		t.Fatalf("status output while uploads fail:\n%s", out)
	}
	var state string
	if !eventually(t, 20*time.Second, func() bool {
		state, _ = xattrState(filepath.Join(mp, "c.bin"))
		return state == "pending"
	}) {
		t.Fatalf("c.bin state %q, want pending between retries", state)
	}
	mustNotBeServed(t, ts, "c.bin")

	ts.ClearFaults()
	if !eventually(t, 60*time.Second, func() bool {
		return strings.Contains(runStatusCmd(t, mp), "nothing pending")
	}) {
		t.Fatalf("still pending after the faults cleared:\n%s", runStatusCmd(t, mp))
	}
	waitServed(t, ts, "c.bin", c, 5*time.Second)
	if st := statusJSON(t, mp); len(st.Files) != 0 || !st.Done() || !st.Online {
		t.Fatalf("status after drain: %+v", st)
	}
	if s, err := xattrState(filepath.Join(mp, "c.bin")); err != nil || s != "published" {
		t.Fatalf("c.bin: state %q, %v; want published", s, err)
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)
}

// TestProcessEmbeddedLocalService: without --host the mount runs the local
// service in-process and keeps its files under --local-data across runs.
func TestProcessEmbeddedLocalService(t *testing.T) {
	requireFUSE(t)
	mp, data, cacheDir := t.TempDir(), t.TempDir(), t.TempDir()
	files := map[string][]byte{"hello.txt": []byte("hello, local evo\n"), "models/grid.bin": randomBytes(31, 5<<20+3)}
	start := func(name, cache string) *evofsProc {
		p := startEvofs(t, name, nil, "mount", "--local", "--local-data", data, "--cache-dir", cache, "--poll-interval", "1s", mp)
		p.mountpoint = mp
		p.waitMounted()
		return p
	}
	p := start("local#1", cacheDir)
	for rel, d := range files {
		writeIn(t, mp, rel, d)
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(60 * time.Second)

	p = start("local#2", cacheDir)
	for rel, d := range files {
		mustEqual(t, "same dirs: "+rel, readFile(t, filepath.Join(mp, rel)), d)
		if s, err := xattrState(filepath.Join(mp, rel)); err != nil || s != "published" {
			t.Fatalf("%s: state %q, %v; want published", rel, s, err)
		}
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)

	// A fresh cache: the bytes can only come from the local service's data.
	p = start("local#3", t.TempDir())
	for rel, d := range files {
		mustEqual(t, "fresh cache: "+rel, readFile(t, filepath.Join(mp, rel)), d)
	}
	p.signal(syscall.SIGTERM)
	p.expectCleanExit(30 * time.Second)
}

// bufAt is an io.WriterAt over a fixed buffer.
type bufAt []byte

func (b bufAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(b)) {
		return 0, errors.New("write beyond buffer")
	}
	return copy(b[off:], p), nil
}

// fetch downloads the latest version of path through the File API.
func fetch(ctx context.Context, c *remote.Client, path string) ([]byte, error) {
	m, err := c.GetByPath(ctx, path, remote.GetOptions{})
	if err != nil {
		return nil, err
	}
	buf := make(bufAt, m.Size)
	if err := c.Download(ctx, c.NewBlob(m), buf, 0, m.Size, nil); err != nil {
		return nil, err
	}
	return buf, nil
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startServe runs `evofs serve` on addr and waits for its banner.
func startServe(t testing.TB, name, addr, data, token string) *evofsProc {
	t.Helper()
	p := startEvofs(t, name, nil, "serve", "--addr", addr, "--data", data, "--token", token, "--publish-delay", "100ms")
	var line string
	if !eventually(t, 20*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "evofs serve: File API at ") {
				line = sc.Text()
				return true
			}
		}
		return p.exited()
	}) || line == "" {
		t.Fatalf("%s printed no banner (exited: %v)", name, p.exited())
	}
	if got := strings.TrimPrefix(line, "evofs serve: File API at "); got != "http://"+addr {
		t.Fatalf("%s: banner names %q, want http://%s", name, got, addr)
	}
	return p
}

// TestProcessServeKill9Restart: a mount of `evofs serve` survives the
// service being killed with SIGKILL and restarted on the same address and
// data dir; published files are still served exactly.
func TestProcessServeKill9Restart(t *testing.T) {
	requireFUSE(t)
	addr, data, mp, cacheDir := freeAddr(t), t.TempDir(), t.TempDir(), t.TempDir()
	const token = "serve-secret-token"
	org, ws := uuid.New(), uuid.New()
	srv := startServe(t, "serve#1", addr, data, token)

	mnt := startEvofs(t, "mount", []string{"EVO_TOKEN=" + token}, "mount", "--host", "http://"+addr,
		"--org", org.String(), "--workspace", ws.String(), "--cache-dir", cacheDir,
		"--poll-interval", "1s", "--write-back-delay", "0s", mp)
	mnt.mountpoint = mp
	mnt.waitMounted()

	client, err := remote.New(remote.Config{BaseURL: "http://" + addr, Org: org, Workspace: ws, Tokens: remote.StaticToken(token),
		Retry: remote.RetryPolicy{MaxAttempts: 2, MinDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	waitFetched := func(path string, want []byte, d time.Duration) {
		t.Helper()
		var last string
		if !eventually(t, d, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := fetch(ctx, client, path)
			if err != nil {
				last = err.Error()
				return false
			}
			last = fmt.Sprintf("%d bytes sha %s, want %d bytes sha %s", len(got), sum(got), len(want), sum(want))
			return bytes.Equal(got, want)
		}) {
			t.Fatalf("%s not served with the expected bytes within %s: %s", path, d, last)
		}
	}

	one := randomBytes(41, 2<<20+5)
	writeIn(t, mp, "one.bin", one)
	mustEqual(t, "read back", readFile(t, filepath.Join(mp, "one.bin")), one)
	waitFetched("one.bin", one, 30*time.Second)

	srv.kill9()
	// The mount notices the service is gone at its next poll.
	if !eventually(t, 15*time.Second, func() bool { return !statusJSON(t, mp).Online }) {
		t.Fatal("status never went offline while the service was down")
	}
	mustEqual(t, "read while the service is down", readFile(t, filepath.Join(mp, "one.bin")), one)

	startServe(t, "serve#2", addr, data, token)
	waitFetched("one.bin", one, 10*time.Second)
	if !eventually(t, 15*time.Second, func() bool { return statusJSON(t, mp).Online }) {
		t.Fatal("status never came back online after the restart")
	}
	two := randomBytes(42, 300<<10)
	writeIn(t, mp, "two.bin", two)
	waitFetched("two.bin", two, 30*time.Second)
	mustEqual(t, "one.bin through the mount after the restart", readFile(t, filepath.Join(mp, "one.bin")), one)

	mnt.signal(syscall.SIGTERM)
	mnt.expectCleanExit(30 * time.Second)
}
