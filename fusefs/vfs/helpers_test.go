package vfs

// Test helpers: a core built on the in-process File API service, a content
// cache in a temp dir and a real writeback queue, driven through the core's
// exported API (no mount). Bytes are checked on the service side with
// emulator.ReadFile and sha256.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

// coreOpts tunes one test core.
type coreOpts struct {
	delay         time.Duration // writeback delay
	poll          time.Duration // listing poll interval (0 = none; tests call refresh)
	readOnly      bool
	syncClose     bool
	maxDirRename  int64
	localPatterns []string
	emu           emulator.Options
	ts            *emulator.TestServer // reuse a service (second core); default fresh
	noStart       bool                 // build but do not Start (seed the service first)
	dir           string               // reuse this cache folder (a restart); default fresh
}

// env is one core against one emulated service.
type env struct {
	t       testing.TB
	ts      *emulator.TestServer
	client  *remote.Client
	cache   *cache.Cache
	core    *FS
	log     *syncWriter
	journal string // the write-back journal's directory
	dir     string // the cache folder (journal, data, meta)
	closed  bool
}

// syncWriter is a log sink read after the core wrote to it.
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

// newCore builds and starts a core; cleanup drains it, then closes it.
func newCore(t testing.TB, o coreOpts) *env {
	t.Helper()
	ts := o.ts
	if ts == nil {
		ts = emulator.NewTestServer(t, o.emu)
	}
	w := &syncWriter{}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(logrus.DebugLevel)
	log := logrus.NewEntry(l).WithField("test", t.Name())
	// Closed before the server's Close (cleanups run last-in first-out): an
	// idle connection would otherwise hold http.Server.Shutdown for 5 s.
	tr := remote.NewTransport(4)
	t.Cleanup(tr.CloseIdleConnections)
	client, err := remote.New(remote.Config{
		HTTPClient: &http.Client{Transport: tr},
		BaseURL:    ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: remote.StaticToken(ts.Token),
		PollMin: 2 * time.Millisecond, PollMax: 50 * time.Millisecond,
		Retry:  remote.RetryPolicy{MaxAttempts: 3, MinDelay: 2 * time.Millisecond, MaxDelay: 20 * time.Millisecond},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	c, err := cache.Open(cache.Config{Dir: filepath.Join(dir, "data"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	core, err := New(Config{
		UID: 1000, GID: 1000, ReadOnly: o.readOnly, SyncClose: o.syncClose, PollInterval: o.poll,
		MaxDirRenameBytes: o.maxDirRename, LocalPatterns: o.localPatterns,
		Writeback: writeback.Config{Dir: filepath.Join(dir, "journal"), Delay: o.delay,
			RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond},
		Logger: log,
	}, client, c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	e := &env{t: t, ts: ts, client: client, cache: c, core: core, log: w, journal: filepath.Join(dir, "journal"), dir: dir}
	t.Cleanup(func() {
		e.close()
		if t.Failed() {
			s := w.String()
			if len(s) > 12000 {
				s = "…" + s[len(s)-12000:]
			}
			t.Logf("core log:\n%s", s)
		}
	})
	if !o.noStart {
		e.start()
	}
	return e
}

func (e *env) start() {
	e.t.Helper()
	if err := e.core.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// close drains (bounded), then stops the core and the cache. Safe twice.
func (e *env) close() {
	if e.closed {
		return
	}
	e.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.ts.ClearFaults()
	if err := e.core.Drain(ctx); err != nil {
		e.t.Errorf("drain at cleanup: %v", err)
	}
	e.core.Close()
	e.cache.Close()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// drain publishes everything pending now.
func (e *env) drain() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.core.Drain(ctx); err != nil {
		e.t.Fatalf("drain: %v", err)
	}
}

// refresh merges the service's listing now.
func (e *env) refresh() {
	e.t.Helper()
	if err := e.core.Refresh(ctxT(e.t)); err != nil {
		e.t.Fatalf("refresh: %v", err)
	}
}

// node resolves a slash path from the root ("" = root).
func (e *env) node(p string) (*Node, error) {
	n := e.core.Root()
	for _, s := range splitPath(p) {
		c, err := e.core.Lookup(n, s)
		if err != nil {
			return nil, err
		}
		n = c
	}
	return n, nil
}

func (e *env) mustNode(p string) *Node {
	e.t.Helper()
	n, err := e.node(p)
	if err != nil {
		e.t.Fatalf("lookup %q: %v", p, err)
	}
	return n
}

// dirOf returns the folder node of p's parent, creating folders as needed.
func (e *env) dirOf(p string) (*Node, string) {
	e.t.Helper()
	segs := splitPath(p)
	d := e.core.Root()
	for _, s := range segs[:len(segs)-1] {
		c, err := e.core.Lookup(d, s)
		if errors.Is(err, ErrNotExist) {
			c, err = e.core.Mkdir(d, s)
		}
		if err != nil {
			e.t.Fatalf("folder %q of %q: %v", s, p, err)
		}
		d = c
	}
	return d, segs[len(segs)-1]
}

// create makes a new file and opens it for writing.
func (e *env) create(p string) (*Node, *Handle) {
	e.t.Helper()
	d, name := e.dirOf(p)
	n, h, _, err := e.core.Create(ctxT(e.t), d, name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC)
	if err != nil {
		e.t.Fatalf("create %q: %v", p, err)
	}
	return n, h
}

// write writes at off through h, failing the test on error.
func (e *env) write(h *Handle, data []byte, off int64) {
	e.t.Helper()
	n, err := h.Write(ctxT(e.t), data, off)
	if err != nil || n != len(data) {
		e.t.Fatalf("write %d bytes at %d: n=%d err=%v", len(data), off, n, err)
	}
}

// closeH is the kernel's close: flush, then release.
func (e *env) closeH(h *Handle) {
	e.t.Helper()
	if err := h.Flush(ctxT(e.t)); err != nil {
		e.t.Fatalf("flush: %v", err)
	}
	h.Release()
}

// writeFile creates (or truncates) p with data and closes it, as the shell's > does.
func (e *env) writeFile(p string, data []byte) *Node {
	e.t.Helper()
	n, h := e.create(p)
	if len(data) > 0 {
		e.write(h, data, 0)
	}
	e.closeH(h)
	return n
}

// journalRecords lists the write-back journal's records.
func (e *env) journalRecords() []string {
	e.t.Helper()
	recs, err := filepath.Glob(filepath.Join(e.journal, "*.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// open opens p with flags.
func (e *env) open(p string, flags int) *Handle {
	e.t.Helper()
	h, _, err := e.core.Open(ctxT(e.t), e.mustNode(p), flags)
	if err != nil {
		e.t.Fatalf("open %q: %v", p, err)
	}
	return h
}

// readAll reads a handle from 0 to EOF in uneven pieces.
func readAll(ctx context.Context, h *Handle) ([]byte, error) {
	var out []byte
	buf := make([]byte, 100_000)
	for {
		n, err := h.Read(ctx, buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
	}
}

// readFile opens p read-only, reads it all and closes it.
func (e *env) readFile(p string) []byte {
	e.t.Helper()
	h := e.open(p, syscall.O_RDONLY)
	defer h.Release()
	b, err := readAll(ctxT(e.t), h)
	if err != nil {
		e.t.Fatalf("read %q: %v", p, err)
	}
	return b
}

// remote reads the latest version of p on the service.
func (e *env) remote(p string) ([]byte, uuid.UUID, string, error) {
	return e.ts.ReadFile(e.ts.Org, e.ts.Workspace, p)
}

// mustRemote returns the service's bytes and identity of p.
func (e *env) mustRemote(p string) ([]byte, uuid.UUID, string) {
	e.t.Helper()
	d, id, v, err := e.remote(p)
	if err != nil {
		e.t.Fatalf("%q on the service: %v", p, err)
	}
	return d, id, v
}

// remoteAbsent fails unless p has no live file on the service.
func (e *env) remoteAbsent(p string) {
	e.t.Helper()
	if _, _, _, err := e.remote(p); !errors.Is(err, emulator.ErrNotFound) {
		e.t.Fatalf("%q should not be on the service (err=%v)", p, err)
	}
}

// remoteEqual fails unless the service holds want at p.
func (e *env) remoteEqual(p string, want []byte) (uuid.UUID, string) {
	e.t.Helper()
	d, id, v := e.mustRemote(p)
	mustEqual(e.t, p+" on the service", d, want)
	return id, v
}

// versions lists a file's versions on the service, oldest first.
func (e *env) versions(id uuid.UUID) []remote.VersionID {
	e.t.Helper()
	m, err := e.client.GetByID(ctxT(e.t), id, remote.GetOptions{IncludeVersions: true})
	if err != nil {
		e.t.Fatalf("get %s: %v", id, err)
	}
	var out []remote.VersionID
	for _, v := range m.Versions {
		out = append(out, v.VersionID)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) < len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// versionBytes downloads one version of a file from the service.
func (e *env) versionBytes(id uuid.UUID, v remote.VersionID) []byte {
	e.t.Helper()
	m, err := e.client.GetByID(ctxT(e.t), id, remote.GetOptions{VersionID: v})
	if err != nil {
		e.t.Fatalf("get %s@%s: %v", id, v, err)
	}
	buf := &memWriter{}
	if err := e.client.Download(ctxT(e.t), e.client.NewBlob(m), buf, 0, m.Size, nil); err != nil {
		e.t.Fatalf("download %s@%s: %v", id, v, err)
	}
	return buf.bytes(m.Size)
}

// remotePaths lists the service's live paths, sorted.
func (e *env) remotePaths() []string {
	e.t.Helper()
	files, err := e.client.ListAll(ctxT(e.t), remote.ListOptions{})
	if err != nil {
		e.t.Fatalf("list: %v", err)
	}
	var out []string
	for i := range files {
		out = append(out, files[i].FullPath())
	}
	sort.Strings(out)
	return out
}

type memWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *memWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(w.buf)) {
		w.buf = append(w.buf, make([]byte, end-int64(len(w.buf)))...)
	}
	copy(w.buf[off:], p)
	return len(p), nil
}

func (w *memWriter) bytes(size int64) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]byte, size)
	copy(out, w.buf)
	return out
}

var _ io.WriterAt = (*memWriter)(nil)

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// waitState polls the node's state xattr.
func (e *env) waitState(n *Node, want string) {
	e.t.Helper()
	var got string
	if !eventually(e.t, 10*time.Second, func() bool {
		got = e.core.Xattrs(n)[XattrState]
		return got == want
	}) {
		e.t.Fatalf("state of %s: %q, want %q", e.core.Path(n), got, want)
	}
}

// names lists a folder's entry names.
func (e *env) names(p string) []string {
	e.t.Helper()
	ents, err := e.core.Readdir(e.mustNode(p))
	if err != nil {
		e.t.Fatalf("readdir %q: %v", p, err)
	}
	var out []string
	for _, d := range ents {
		n := d.Name
		if d.Dir {
			n += "/"
		}
		out = append(out, n)
	}
	return out
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha %s), want %d bytes (sha %s)", what, len(got), sum(got), len(want), sum(want))
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err %v, want %v", what, err, want)
	}
}

func join(s []string) string { return strings.Join(s, ",") }

func remoteVersion(v string) remote.VersionID { return remote.VersionID(v) }

// publishes counts register calls (new files and new versions).
func (e *env) publishes() int {
	return e.ts.Requests(emulator.OpUpsertByPath) + e.ts.Requests(emulator.OpUpdateByID)
}

// seed puts files on the service (as another client) before Start.
func (e *env) seed(files map[string][]byte) {
	e.t.Helper()
	for p, d := range files {
		if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, p, d); err != nil {
			e.t.Fatalf("seed %q: %v", p, err)
		}
	}
}

// newSeeded builds a core over a service already holding files.
func newSeeded(t testing.TB, o coreOpts, files map[string][]byte) *env {
	t.Helper()
	o.noStart = true
	e := newCore(t, o)
	e.seed(files)
	e.start()
	return e
}

func timeoutCtx(t testing.TB, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
