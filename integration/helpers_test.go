// Package integration mounts real FUSE filesystems in temp dirs against the
// in-process File API service over loopback HTTP and checks bytes on both
// sides with checksums. Tests skip where FUSE is unavailable, except under
// CI=true, where that is a failure.
//
// Mind go-fuse's deadlock notes: these tests serve the mount from the test
// process, so they never exec binaries from the mount nor mmap files on it.
package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/fusefs"
	"evofs/fusefs/vfs"
	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

// requireFUSE skips (or, under CI, fails) when this machine cannot mount.
func requireFUSE(t testing.TB) {
	t.Helper()
	why := ""
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		why = "cannot open /dev/fuse: " + err.Error()
	} else {
		f.Close()
		if os.Geteuid() != 0 {
			if _, err := exec.LookPath("fusermount3"); err != nil {
				why = "not root and no fusermount3 on PATH"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE is required under CI: %s", why)
	}
	// make integration reads this to say loudly that tests were skipped.
	if p := os.Getenv("EVOFS_SKIP_LOG"); p != "" {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%s\t%s\n", t.Name(), why)
			f.Close()
		}
	}
	t.Skip(why)
}

// azureBlobs, when set (only by TestAzurite, while its subtests run), puts
// the blobs of every service a test starts into Azurite.
var azureBlobs *emulator.AzureBlobs

// mountOpts tunes one test mount.
type mountOpts struct {
	writeBackDelay time.Duration
	pollInterval   time.Duration
	syncClose      bool
	readOnly       bool
	allowOther     bool
	cacheDir       string // reuse a cache (remount); default fresh
	cacheSize      int64
	maxDirRename   int64
	emu            emulator.Options
	tokens         remote.TokenSource // default: the test server's static token
}

// testMount is one mounted workspace.
type testMount struct {
	t      testing.TB
	dir    string
	ts     *emulator.TestServer
	client *remote.Client
	core   *vfs.FS
	cache  *cache.Cache
	server *fuse.Server
	log    *syncWriter
	closed bool
}

// syncWriter is a log sink tests can read while the mount writes to it.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func testLogger(t testing.TB) (*logrus.Entry, *syncWriter) {
	w := &syncWriter{}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l).WithField("test", t.Name()), w
}

// mountT starts a service and mounts its workspace.
func mountT(t testing.TB, o mountOpts) *testMount {
	t.Helper()
	requireFUSE(t)
	if o.emu.AzureBlobs == nil {
		o.emu.AzureBlobs = azureBlobs
	}
	ts := emulator.NewTestServer(t, o.emu)
	return mountOn(t, ts, o)
}

// mountOn mounts ts's workspace (a second mount of one service, or a remount).
func mountOn(t testing.TB, ts *emulator.TestServer, o mountOpts) *testMount {
	t.Helper()
	requireFUSE(t)
	log, buf := testLogger(t)
	if o.tokens == nil {
		o.tokens = remote.StaticToken(ts.Token)
	}
	client, err := remote.New(remote.Config{
		BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: o.tokens,
		PollMin: 5 * time.Millisecond, PollMax: 100 * time.Millisecond,
		Retry:  remote.RetryPolicy{MaxAttempts: 5, MinDelay: 5 * time.Millisecond, MaxDelay: 100 * time.Millisecond},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.cacheDir == "" {
		o.cacheDir = t.TempDir()
	}
	c, err := cache.Open(cache.Config{Dir: filepath.Join(o.cacheDir, "data"), MaxBytes: o.cacheSize, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	core, err := vfs.New(vfs.Config{
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), ReadOnly: o.readOnly,
		PollInterval: o.pollInterval, SyncClose: o.syncClose, MaxDirRenameBytes: o.maxDirRename,
		ListingFile: filepath.Join(o.cacheDir, "listing.json"),
		Writeback: writeback.Config{Dir: filepath.Join(o.cacheDir, "journal"), Delay: o.writeBackDelay,
			RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond},
		Logger: log,
	}, client, c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if err := core.Start(context.Background()); err != nil {
		core.Close()
		c.Close()
		t.Fatal(err)
	}
	dir := t.TempDir()
	server, err := fusefs.Mount(dir, core, fusefs.Options{Logger: log, AllowOther: o.allowOther})
	if err != nil {
		core.Close()
		c.Close()
		t.Fatal(err)
	}
	m := &testMount{t: t, dir: dir, ts: ts, client: client, core: core, cache: c, server: server, log: buf}
	t.Cleanup(func() {
		m.unmount()
		if t.Failed() {
			t.Logf("mount log:\n%s", tail(buf.String(), 8000))
		}
	})
	return m
}

// unmount unmounts, publishes what is pending and stops the core. Safe to call twice.
func (m *testMount) unmount() {
	m.t.Helper()
	if m.closed {
		return
	}
	m.closed = true
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := m.server.Unmount()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			m.t.Errorf("unmount %s: %v", m.dir, err)
			break
		}
		time.Sleep(50 * time.Millisecond) // EBUSY: nothing to wait on but time
	}
	m.server.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.core.Drain(ctx); err != nil {
		m.t.Errorf("drain: %v", err)
	}
	m.core.Close()
	m.cache.Close()
}

func (m *testMount) path(p string) string { return filepath.Join(m.dir, p) }

// remoteFile reads the latest visible version of path on the service.
func (m *testMount) remoteFile(p string) (data []byte, fileID, version string, err error) {
	d, id, v, err := m.ts.ReadFile(m.ts.Org, m.ts.Workspace, p)
	return d, id.String(), v, err
}

// waitRemote polls the service until path holds want (by checksum).
func (m *testMount) waitRemote(p string, want []byte) (fileID, version string) {
	m.t.Helper()
	var last string
	ok := eventually(m.t, 20*time.Second, func() bool {
		d, id, v, err := m.remoteFile(p)
		if err != nil {
			last = err.Error()
			return false
		}
		last = "checksum " + sum(d) + " want " + sum(want)
		fileID, version = id, v
		return bytes.Equal(d, want)
	})
	if !ok {
		m.t.Fatalf("%s never reached the service with the expected bytes: %s", p, last)
	}
	return fileID, version
}

// waitRemoteGone polls until path has no live file on the service.
func (m *testMount) waitRemoteGone(p string) {
	m.t.Helper()
	if !eventually(m.t, 20*time.Second, func() bool {
		_, _, _, err := m.remoteFile(p)
		return err != nil
	}) {
		m.t.Fatalf("%s is still on the service", p)
	}
}

// drain publishes everything pending now.
func (m *testMount) drain() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.core.Drain(ctx); err != nil {
		m.t.Fatalf("drain: %v", err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha %s), want %d bytes (sha %s)", what, len(got), sum(got), len(want), sum(want))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func listAll() remote.ListOptions { return remote.ListOptions{} }
