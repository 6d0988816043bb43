package writeback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"evofs/cache"
	"evofs/remote"
	"evofs/remote/emulator"
)

// ---- harness ----------------------------------------------------------------

type env struct {
	t       *testing.T
	ts      *emulator.TestServer
	cl      *remote.Client
	hook    *hookPublisher
	dir     string // journal
	staging string // staging files

	mu        sync.Mutex
	published []Result
}

func newEnv(t *testing.T, o emulator.Options, tune func(*remote.Config)) *env {
	t.Helper()
	ts := emulator.NewTestServer(t, o)
	// Runs before the server's Close: a connection the transport dialled
	// but never used would otherwise hold http.Server.Shutdown for 5 s.
	tr := remote.NewTransport(4)
	t.Cleanup(tr.CloseIdleConnections)
	rc := remote.Config{
		HTTPClient: &http.Client{Transport: tr},
		BaseURL:    ts.URL,
		Org:        ts.Org,
		Workspace:  ts.Workspace,
		Tokens:     remote.StaticToken(ts.Token),
		PollMin:    5 * time.Millisecond,
		PollMax:    50 * time.Millisecond,
		Retry:      remote.RetryPolicy{MaxAttempts: 2, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	}
	if tune != nil {
		tune(&rc)
	}
	cl, err := remote.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ts: ts, cl: cl, hook: &hookPublisher{Publisher: cl}, dir: t.TempDir(), staging: t.TempDir()}
	return e
}

func (e *env) config() Config {
	return Config{
		Dir:      e.dir,
		RetryMin: 10 * time.Millisecond,
		RetryMax: 100 * time.Millisecond,
		OnPublished: func(r Result) bool {
			e.mu.Lock()
			e.published = append(e.published, r)
			e.mu.Unlock()
			return true
		},
	}
}

func (e *env) open(cfg Config) *Queue {
	e.t.Helper()
	q, err := New(cfg, e.hook)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		checkStagedCount(e.t, q)
		q.Close()
	})
	return q
}

// checkStagedCount fails t if the queue's count of jobs per staging file
// (kept as lists change) differs from a recount of its lists.
func checkStagedCount(t testing.TB, q *Queue) {
	q.mu.Lock()
	defer q.mu.Unlock()
	want := map[string]int{}
	for _, list := range q.keys {
		for _, j := range list {
			want[j.rec.Job.Staging]++
		}
	}
	if !maps.Equal(want, q.staged) {
		t.Errorf("staging counts %v, recount %v", q.staged, want)
	}
}

func (e *env) stage(data []byte) string {
	e.t.Helper()
	f, err := os.CreateTemp(e.staging, "stg-*")
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		e.t.Fatal(err)
	}
	return f.Name()
}

func (e *env) results() []Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Result(nil), e.published...)
}

// remoteFile reads path from the emulator and checks its bytes by sha256.
func (e *env) expectFile(path string, want []byte) (uuid.UUID, remote.VersionID) {
	e.t.Helper()
	data, id, v, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, path)
	if err != nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	if sha256.Sum256(data) != sha256.Sum256(want) {
		e.t.Fatalf("%s: content differs (%d bytes, want %d)", path, len(data), len(want))
	}
	return id, remote.VersionID(v)
}

func (e *env) journal() []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

// records lists the journal's records, without the temp file of a record
// being rewritten by a running job.
func (e *env) records() []string {
	var names []string
	for _, n := range e.journal() {
		if !strings.HasPrefix(n, tempPrefix) {
			names = append(names, n)
		}
	}
	return names
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond with a deadline (state observed through the public
// API; not a sleep standing in for synchronisation).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	return b
}

// hookPublisher is the real client with test hooks around it: it can hold a
// publish after registration (or after success) until released or cancelled,
// and records tickets.
type hookPublisher struct {
	Publisher
	mu         sync.Mutex
	holdReg    chan struct{}             // non-nil: after OnRegistered, wait for close (or ctx)
	holdDone   chan struct{}             // non-nil: after a successful publish, wait for close (or ctx)
	registered chan *remote.UploadTicket // buffered; receives tickets if non-nil
	stallRead  int64                     // >0: reads past this offset block until ctx ends
	publishes  int
}

type stallReader struct {
	ctx   context.Context
	r     io.ReaderAt
	limit int64
}

func (s stallReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.limit {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	return s.r.ReadAt(p, off)
}

func (h *hookPublisher) Publish(ctx context.Context, t remote.Target, content io.ReaderAt, size int64, o remote.PublishOptions) (*remote.FileMeta, error) {
	h.mu.Lock()
	holdReg, holdDone, reg, stall := h.holdReg, h.holdDone, h.registered, h.stallRead
	h.publishes++
	h.mu.Unlock()
	if stall > 0 {
		content = stallReader{ctx, content, stall}
	}
	inner := o.OnRegistered
	o.OnRegistered = func(tk *remote.UploadTicket) {
		inner(tk)
		if reg != nil {
			c := *tk
			reg <- &c
		}
		if holdReg != nil {
			select {
			case <-holdReg:
			case <-ctx.Done():
			}
		}
	}
	m, err := h.Publisher.Publish(ctx, t, content, size, o)
	if err == nil && holdDone != nil {
		select {
		case <-holdDone:
		case <-ctx.Done():
		}
	}
	return m, err
}

func (h *hookPublisher) set(f func(h *hookPublisher)) {
	h.mu.Lock()
	f(h)
	h.mu.Unlock()
}

// ---- tests ------------------------------------------------------------------

func TestPublishNewThenByID(t *testing.T) {
	e := newEnv(t, emulator.Options{PublishDelay: 20 * time.Millisecond}, nil)
	q := e.open(e.config())
	ctx := ctxT(t, 20*time.Second)

	data := randBytes(100_000)
	stg := e.stage(data)
	if err := q.Enqueue(Job{Key: "k1", Path: "A/B/new file.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	id, v1 := e.expectFile("A/B/new file.txt", data)
	rs := e.results()
	if len(rs) != 1 || rs[0].Meta.FileID != id || rs[0].Meta.VersionID != v1 || rs[0].ConflictPath != "" {
		t.Fatalf("OnPublished got %+v, want file %s version %s", rs, id, v1)
	}
	if exists(stg) {
		t.Error("staging file kept after publish")
	}
	if j := e.journal(); len(j) != 0 {
		t.Errorf("journal not empty: %v", j)
	}

	data2 := randBytes(70_000)
	if err := q.Enqueue(Job{Key: "k1", Path: "A/B/new file.txt", FileID: id, BaseVersion: v1, Staging: e.stage(data2)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	id2, v2 := e.expectFile("A/B/new file.txt", data2)
	if id2 != id || v2 == v1 {
		t.Fatalf("second publish: file %s version %s, want same file %s and a new version than %s", id2, v2, id, v1)
	}
	if n := e.ts.Requests(emulator.OpUpdateByID); n != 1 {
		t.Errorf("update-by-id requests = %d, want 1", n)
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 {
		t.Errorf("upsert-by-path requests = %d, want 1", n)
	}
	if _, ok := q.Pending("k1"); ok {
		t.Error("Pending reports a job after Wait")
	}
}

func TestCoalescing(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)

	var stgs []string
	var last []byte
	for i := range 3 {
		last = []byte(fmt.Sprintf("version %d of the file", i))
		stgs = append(stgs, e.stage(last))
		if err := q.Enqueue(Job{Key: "k", Path: "c.txt", Staging: stgs[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if st := q.Status(); len(st) != 1 || st[0].Staging != stgs[2] || st[0].State != StatePending {
		t.Fatalf("status after 3 enqueues: %+v", st)
	}
	if exists(stgs[0]) || exists(stgs[1]) {
		t.Error("replaced staging files not removed")
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 0 {
		t.Fatalf("published before Delay: %d registers", n)
	}
	// Re-enqueueing the same staging file keeps it.
	if err := q.Enqueue(Job{Key: "k", Path: "c.txt", Staging: stgs[2]}); err != nil {
		t.Fatal(err)
	}
	if !exists(stgs[2]) {
		t.Fatal("re-enqueue of the same staging file removed it")
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("c.txt", last)
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 {
		t.Errorf("upsert-by-path requests = %d, want 1", n)
	}
	if len(e.results()) != 1 {
		t.Errorf("OnPublished called %d times, want 1", len(e.results()))
	}
}

func TestEnqueueWhileInFlight(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	release := make(chan struct{})
	reg := make(chan *remote.UploadTicket, 4)
	e.hook.set(func(h *hookPublisher) { h.holdReg, h.registered = release, reg })
	q := e.open(e.config())
	ctx := ctxT(t, 20*time.Second)

	first := []byte("first")
	if err := q.Enqueue(Job{Key: "k", Path: "f.txt", Staging: e.stage(first)}); err != nil {
		t.Fatal(err)
	}
	<-reg // in flight, held after registration
	if st, ok := q.Pending("k"); !ok || st.State != StateUploading {
		t.Fatalf("Pending while in flight = %+v %v", st, ok)
	}
	second := []byte("second, longer content")
	if err := q.Enqueue(Job{Key: "k", Path: "f.txt", Staging: e.stage(second)}); err != nil {
		t.Fatal(err)
	}
	if st := q.Status(); len(st) != 2 || st[0].State != StateUploading || st[1].State != StatePending {
		t.Fatalf("status = %+v", st)
	}
	if _, ok := q.Take("k"); !ok {
		t.Fatal("Take of the queued job failed")
	}
	third := []byte("third")
	stg3 := e.stage(third)
	if err := q.Enqueue(Job{Key: "k", Path: "f.txt", Staging: stg3}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := q.Wait(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	id, v := e.expectFile("f.txt", third)
	rs := e.results()
	if len(rs) != 2 || rs[0].Meta.FileID != id || rs[1].Meta.FileID != id || rs[1].Meta.VersionID != v {
		t.Fatalf("results %+v", rs)
	}
	if rs[1].Job.FileID != id || rs[1].Job.BaseVersion != rs[0].Meta.VersionID {
		t.Errorf("queued job not re-based: %+v", rs[1].Job)
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 {
		t.Errorf("upsert-by-path = %d, want 1", n)
	}
	if n := e.ts.Requests(emulator.OpUpdateByID); n != 1 {
		t.Errorf("update-by-id = %d, want 1 (second publish by id)", n)
	}
}

var conflictRE = regexp.MustCompile(`^D/report \(conflict \d{4}-\d\d-\d\d \d{6}\)\.csv$`)

func TestConflictCopy(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	q := e.open(e.config())
	ctx := ctxT(t, 20*time.Second)

	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "D/report.csv", []byte("base")); err != nil {
		t.Fatal(err)
	}
	id, base := e.expectFile("D/report.csv", []byte("base"))
	theirs := []byte("their edit")
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "D/report.csv", theirs); err != nil {
		t.Fatal(err)
	}
	ours := []byte("our edit")
	if err := q.Enqueue(Job{Key: "r", Path: "D/report.csv", FileID: id, BaseVersion: base, Staging: e.stage(ours)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	rs := e.results()
	if len(rs) != 1 || !conflictRE.MatchString(rs[0].ConflictPath) {
		t.Fatalf("results %+v", rs)
	}
	cid, _ := e.expectFile(rs[0].ConflictPath, ours)
	if cid == id || rs[0].Meta.FileID != cid || rs[0].Meta.FullPath() != rs[0].ConflictPath {
		t.Errorf("conflict copy id %s (original %s), meta %+v", cid, id, rs[0].Meta)
	}
	id2, _ := e.expectFile("D/report.csv", theirs)
	if id2 != id {
		t.Errorf("original file id changed")
	}
	if n := e.ts.Requests(emulator.OpUpdateByID); n != 0 {
		t.Errorf("update-by-id = %d: the original was written", n)
	}
}

func TestPublishAfterRemoteDelete(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	q := e.open(e.config())
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "gone.txt", []byte("x")); err != nil {
		t.Fatal(err)
	}
	id, v := e.expectFile("gone.txt", []byte("x"))
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "gone.txt"); err != nil {
		t.Fatal(err)
	}
	data := []byte("still here")
	if err := q.Enqueue(Job{Key: "g", Path: "gone.txt", FileID: id, BaseVersion: v, Staging: e.stage(data)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "g"); err != nil {
		t.Fatal(err)
	}
	nid, _ := e.expectFile("gone.txt", data)
	if nid == id {
		t.Error("published into the deleted file")
	}
	if rs := e.results(); len(rs) != 1 || rs[0].ConflictPath != "" {
		t.Errorf("results %+v", rs)
	}
}

func TestRetriesUnderFaults(t *testing.T) {
	e := newEnv(t, emulator.Options{Seed: 7}, func(c *remote.Config) {
		c.SinglePutThreshold = 16 << 10
		c.BlockSize = 8 << 10
		c.Concurrency = 4
	})
	cfg := e.config()
	cfg.Transfers = 6
	q := e.open(cfg)
	for _, f := range []emulator.Fault{{Status: 500}, {Status: 429}, {Drop: true}} {
		e.ts.FailRate(emulator.OpAny, 0.07, f) // ≈ 20% of requests fail
	}
	want := map[string][]byte{}
	for i := range 50 {
		p := fmt.Sprintf("many/f%02d.bin", i)
		want[p] = randBytes(1000 + rand.N(40_000))
		if err := q.Enqueue(Job{Key: p, Path: p, Staging: e.stage(want[p])}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Drain(ctxT(t, 40*time.Second)); err != nil {
		t.Fatal(err)
	}
	e.ts.ClearFaults()
	for p, d := range want {
		e.expectFile(p, d)
	}
	if len(e.results()) != 50 {
		t.Fatalf("OnPublished %d times, want 50", len(e.results()))
	}
	if j := e.journal(); len(j) != 0 {
		t.Errorf("journal left: %v", j)
	}
}

func TestRetryVisibleInStatus(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // one retry is enough to see
	q := e.open(cfg)
	e.ts.FailNext(emulator.OpUpsertByPath, 10, emulator.Fault{Status: 503})
	stg := e.stage([]byte("data"))
	if err := q.Enqueue(Job{Key: "k", Path: "r.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	var st JobStatus
	eventually(t, "a failed try", func() bool { st, _ = q.Pending("k"); return st.Tries > 0 })
	if st.State != StatePending || !strings.Contains(st.LastError, "503") {
		t.Fatalf("status after a transient failure: %+v", st)
	}
	e.ts.ClearFaults()
	// Wait skips the backoff too.
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("r.txt", []byte("data"))
}

func TestPermanentFailure(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	q := e.open(e.config())
	ctx := ctxT(t, 20*time.Second)
	stg := e.stage([]byte("data"))
	if err := q.Enqueue(Job{Key: "bad", Path: "dir/trailing space ", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	err := q.Wait(ctx, "bad")
	var je *JobError
	if !errors.As(err, &je) || !errors.Is(err, remote.ErrInvalidPath) {
		t.Fatalf("Wait = %v, want a *JobError matching ErrInvalidPath", err)
	}
	st, ok := q.Pending("bad")
	if !ok || st.State != StateFailed || st.LastError == "" {
		t.Fatalf("Pending = %+v %v", st, ok)
	}
	if !exists(stg) || len(e.journal()) != 1 {
		t.Fatalf("failed job lost its data: staging %v, journal %v", exists(stg), e.journal())
	}
	derr := q.Drain(ctx)
	if derr == nil || !errors.Is(derr, remote.ErrInvalidPath) || !strings.Contains(derr.Error(), "trailing space") {
		t.Fatalf("Drain = %v", derr)
	}
	tries := st.Tries

	// A restart tries it once more (the cause may have been fixed); it
	// fails again and stays, with its data.
	q.Close()
	q = e.open(e.config())
	if err := q.Wait(ctx, "bad"); !errors.As(err, &je) || je.Key != "bad" {
		t.Fatalf("Wait after restart = %v", err)
	}
	if st, _ := q.Pending("bad"); st.State != StateFailed || st.Tries != tries+1 {
		t.Fatalf("after restart: %+v (tries before %d)", st, tries)
	}
	if !exists(stg) {
		t.Fatal("failed job lost its data after the restart")
	}

	// A new Enqueue for the key replaces the failed job.
	if err := q.Enqueue(Job{Key: "bad", Path: "dir/fixed", Staging: e.stage([]byte("ok"))}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("dir/fixed", []byte("ok"))
	if exists(stg) {
		t.Error("replaced failed job's staging not removed")
	}
}

func TestForbiddenIsPermanent(t *testing.T) {
	viewer := "viewer-token"
	o := emulator.Options{Tokens: map[string]emulator.Grant{
		viewer: {User: emulator.User{ID: uuid.New(), Name: "V"}, Role: emulator.RoleViewer},
	}}
	e := newEnv(t, o, func(c *remote.Config) { c.Tokens = remote.StaticToken(viewer) })
	q := e.open(e.config())
	if err := q.Enqueue(Job{Key: "v", Path: "x.txt", Staging: e.stage([]byte("x"))}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "v"); !errors.Is(err, remote.ErrForbidden) {
		t.Fatalf("Wait = %v, want ErrForbidden", err)
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 {
		t.Errorf("register requests = %d, want 1 (no blind retries)", n)
	}
}

func TestRestartResumesSameVersion(t *testing.T) {
	e := newEnv(t, emulator.Options{}, func(c *remote.Config) {
		c.SinglePutThreshold = 32 << 10
		c.BlockSize = 16 << 10
		c.Concurrency = 2
	})
	reg := make(chan *remote.UploadTicket, 4)
	e.hook.set(func(h *hookPublisher) { h.registered, h.stallRead = reg, 64<<10 })
	e.ts.FailNext(emulator.OpPutBlock, 2, emulator.Fault{Latency: 20 * time.Millisecond})
	q := e.open(e.config())

	data := randBytes(200 << 10)
	stg := e.stage(data)
	if err := q.Enqueue(Job{Key: "big", Path: "big.bin", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	tk := <-reg
	eventually(t, "some blocks acknowledged and journaled", func() bool {
		recs := e.records()
		if len(recs) != 1 {
			return false
		}
		raw, _ := os.ReadFile(filepath.Join(e.dir, recs[0]))
		return bytes.Contains(raw, []byte(`"acked"`))
	})
	recs := e.records()
	if len(recs) != 1 {
		t.Fatalf("journal %v", recs)
	}
	raw, err := os.ReadFile(filepath.Join(e.dir, recs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"version_id": "`+string(tk.VersionID)+`"`)) || bytes.Contains(raw, []byte("sig=")) {
		t.Fatalf("journal record must hold the ticket's version and no signed URL:\n%s", raw)
	}
	q.Close() // interrupts the transfer; the journal keeps it
	if n := e.ts.Requests(emulator.OpPutBlockList); n != 0 {
		t.Fatalf("committed before the restart (%d block lists)", n)
	}
	if st := q.Status(); len(st) != 1 || st[0].State != StatePending {
		t.Fatalf("status after Close: %+v", st)
	}
	if err := q.Enqueue(Job{Key: "x", Path: "x", Staging: e.stage(nil)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close = %v", err)
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "big"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v", err)
	}
	var de *DrainError
	if err := q.Drain(ctxT(t, 20*time.Second)); !errors.As(err, &de) || len(de.Left) != 1 {
		t.Fatalf("Drain after Close = %v", err)
	}

	// The blocks the first run got acknowledged are journaled and not sent again.
	var rec struct {
		Acked []string `json:"acked"`
	}
	raw, err = os.ReadFile(filepath.Join(e.dir, recs[0]))
	if err != nil || json.Unmarshal(raw, &rec) != nil {
		t.Fatalf("journal record: %v\n%s", err, raw)
	}
	if len(rec.Acked) == 0 {
		t.Fatalf("no acknowledged blocks journaled after %d put-block requests", e.ts.Requests(emulator.OpPutBlock))
	}
	putsBefore := e.ts.Requests(emulator.OpPutBlock)

	e.hook.set(func(h *hookPublisher) { h.stallRead = 0 })
	q = e.open(e.config())
	if err := q.Wait(ctxT(t, 20*time.Second), "big"); err != nil {
		t.Fatal(err)
	}
	const blocks = (200 << 10) / (16 << 10)
	if resent := e.ts.Requests(emulator.OpPutBlock) - putsBefore; resent > blocks+1-len(rec.Acked) {
		t.Errorf("resumed upload sent %d blocks; %d of %d were already staged", resent, len(rec.Acked), blocks+1)
	}
	id, v := e.expectFile("big.bin", data)
	tk2 := <-reg
	if id != tk.FileID || v != tk.VersionID || tk2.VersionID != tk.VersionID {
		t.Fatalf("published %s@%s, first registration %s@%s, resume %s", id, v, tk.FileID, tk.VersionID, tk2.VersionID)
	}
	m, err := e.cl.GetByID(context.Background(), id, remote.GetOptions{IncludeVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Versions) != 1 {
		t.Errorf("file has %d versions, want exactly 1", len(m.Versions))
	}
	if exists(stg) || len(e.journal()) != 0 {
		t.Errorf("left behind: staging %v journal %v", exists(stg), e.journal())
	}
}

func TestRestartAfterCommitBeforeVisible(t *testing.T) {
	var clock struct {
		sync.Mutex
		off time.Duration
	}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return time.Now().Add(clock.off) }
	e := newEnv(t, emulator.Options{PublishDelay: time.Hour, Now: now}, nil)
	reg := make(chan *remote.UploadTicket, 4)
	e.hook.set(func(h *hookPublisher) { h.registered = reg })
	q := e.open(e.config())
	data := []byte("committed, not yet visible")
	if err := q.Enqueue(Job{Key: "k", Path: "late.txt", Staging: e.stage(data)}); err != nil {
		t.Fatal(err)
	}
	tk := <-reg
	eventually(t, "commit and polling", func() bool {
		return e.ts.Requests(emulator.OpPutBlob) == 1 && e.ts.Requests(emulator.OpGetByID) >= 1
	})
	q.Close()
	clock.Lock()
	clock.off = 2 * time.Hour
	clock.Unlock()

	q = e.open(e.config())
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	id, v := e.expectFile("late.txt", data)
	if id != tk.FileID || v != tk.VersionID {
		t.Fatalf("published %s@%s, want the registered %s@%s", id, v, tk.FileID, tk.VersionID)
	}
	if n := e.ts.Requests(emulator.OpPutBlob); n != 1 {
		t.Errorf("put-blob = %d, want 1 (resume found it committed)", n)
	}
}

func TestCancelBeforePublish(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)
	stg := e.stage([]byte("doomed"))
	if err := q.Enqueue(Job{Key: "k", Path: "doomed.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	q.Cancel("k")
	if _, ok := q.Pending("k"); ok {
		t.Fatal("job still pending after Cancel")
	}
	if exists(stg) || len(e.journal()) != 0 {
		t.Fatalf("left behind: staging %v journal %v", exists(stg), e.journal())
	}
	if err := q.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 0 {
		t.Fatalf("register requests = %d, want 0", n)
	}
}

func TestCancelInFlightDeletesCreatedFile(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	hold := make(chan struct{}) // never closed: the publish succeeds, then waits for the cancel
	e.hook.set(func(h *hookPublisher) { h.holdDone = hold })
	q := e.open(e.config())
	stg := e.stage([]byte("created then cancelled"))
	if err := q.Enqueue(Job{Key: "k", Path: "tmp/cancel.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file committed", func() bool {
		_, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "tmp/cancel.txt")
		return err == nil
	})
	q.Cancel("k")
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "tmp/cancel.txt"); err == nil {
		t.Error("file created by a cancelled publish still exists")
	}
	if len(e.results()) != 0 {
		t.Error("OnPublished called for a cancelled job")
	}
	if exists(stg) || len(e.journal()) != 0 {
		t.Fatalf("left behind: staging %v journal %v", exists(stg), e.journal())
	}
}

// A Cancel that comes after OnPublished adopted the file (a rename over it
// took its identity) leaves the file alone; one that comes after a refusal
// (the file was deleted locally meanwhile) deletes what the publish created.
func TestCancelAfterOnPublishedRespectsAdoption(t *testing.T) {
	for _, adopt := range []bool{true, false} {
		t.Run(fmt.Sprintf("adopted=%v", adopt), func(t *testing.T) {
			e := newEnv(t, emulator.Options{}, nil)
			var q *Queue
			cfg := e.config()
			cfg.OnPublished = func(r Result) bool {
				q.Cancel(r.Job.Key) // what a rename over the file, or an unlink, does
				return adopt
			}
			q = e.open(cfg)
			data := []byte("published, then cancelled")
			if err := q.Enqueue(Job{Key: "k", Path: "adopt.txt", Staging: e.stage(data)}); err != nil {
				t.Fatal(err)
			}
			if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
				t.Fatal(err)
			}
			if err := q.Drain(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "adopt.txt")
			if adopt && err != nil {
				t.Fatalf("adopted file deleted by a later Cancel: %v", err)
			}
			if !adopt && err == nil {
				t.Fatal("file of a publish nobody adopted survived its Cancel")
			}
		})
	}
}

func TestCancelInFlightKeepsExistingFile(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "keep.txt", []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	e.hook.set(func(h *hookPublisher) { h.holdDone = hold })
	q := e.open(e.config())
	// By path onto an existing file: the version is added to it; cancelling
	// must not delete someone else's file.
	if err := q.Enqueue(Job{Key: "k", Path: "keep.txt", Staging: e.stage([]byte("ours"))}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "our version committed", func() bool {
		d, _, _, _ := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "keep.txt")
		return bytes.Equal(d, []byte("ours"))
	})
	q.Cancel("k")
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("keep.txt", []byte("ours"))
}

func TestDrainAndWait(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	cfg.Transfers = 2
	q := e.open(cfg)
	for i := range 5 {
		p := fmt.Sprintf("d/%d.txt", i)
		if err := q.Enqueue(Job{Key: p, Path: p, Staging: e.stage([]byte(p))}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait on one key publishes just that one.
	if err := q.Wait(ctxT(t, 20*time.Second), "d/3.txt"); err != nil {
		t.Fatal(err)
	}
	if n := len(q.Status()); n != 4 {
		t.Fatalf("%d jobs left after Wait on one, want 4", n)
	}
	// A stuck publish: Drain reports it when its ctx ends.
	hold := make(chan struct{})
	e.hook.set(func(h *hookPublisher) { h.holdReg = hold })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Drain(ctx) }()
	eventually(t, "two transfers", func() bool {
		n := 0
		for _, s := range q.Status() {
			if s.State == StateUploading {
				n++
			}
		}
		return n == 2
	})
	cancel()
	err := <-done
	var de *DrainError
	if !errors.As(err, &de) || len(de.Left) != 4 {
		t.Fatalf("Drain with ctx cancelled = %v", err)
	}
	if werr := q.Wait(ctx, "d/0.txt"); !errors.Is(werr, context.Canceled) {
		t.Fatalf("Wait with a cancelled ctx = %v", werr)
	}
	close(hold)
	if err := q.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p := fmt.Sprintf("d/%d.txt", i)
		e.expectFile(p, []byte(p))
	}
}

func TestRenameAndJournalReload(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)
	if err := q.Enqueue(Job{Key: "a", Path: "old/name.txt", Staging: e.stage([]byte("moved"))}); err != nil {
		t.Fatal(err)
	}
	// Too big to travel in its record: once its staging file is gone the
	// job cannot be published (small ones can, see TestInlineRecord...).
	lost := e.stage(bytes.Repeat([]byte("l"), InlineMax+1))
	if err := q.Enqueue(Job{Key: "b", Path: "lost.txt", Staging: lost}); err != nil {
		t.Fatal(err)
	}
	q.Rename("a", "new/name.txt")
	q.Close()
	os.Remove(lost)
	torn := filepath.Join(e.dir, tempPrefix+"torn-123")
	if err := os.WriteFile(torn, []byte(`{"format":1,"id":`), 0o600); err != nil {
		t.Fatal(err)
	}

	q = e.open(cfg) // journaled jobs resume at once despite Delay
	ctx := ctxT(t, 20*time.Second)
	if err := q.Wait(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("new/name.txt", []byte("moved"))
	if _, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "old/name.txt"); err == nil {
		t.Error("published at the old path")
	}
	if err := q.Wait(ctx, "b"); err == nil || !strings.Contains(err.Error(), "staging") {
		t.Fatalf("job with a lost staging file: Wait = %v", err)
	}
	if st, ok := q.Pending("b"); !ok || st.State != StateFailed {
		t.Fatalf("job with a lost staging file: %+v %v", st, ok)
	}
	if exists(torn) {
		t.Error("torn temp file not removed")
	}
}

func TestDeleteAfter(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	q := e.open(e.config())
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "before.txt", []byte("v")); err != nil {
		t.Fatal(err)
	}
	oldID, _ := e.expectFile("before.txt", []byte("v"))
	e.ts.FailNext(emulator.OpDeleteByID, 3, emulator.Fault{Status: 502})
	if err := q.Enqueue(Job{Key: "k", Path: "after.txt", DeleteAfter: oldID, Staging: e.stage([]byte("v"))}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("after.txt", []byte("v"))
	if _, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, "before.txt"); err == nil {
		t.Error("old file not deleted")
	}
}

func TestConflictName(t *testing.T) {
	at := time.Date(2024, 3, 5, 7, 8, 9, 0, time.FixedZone("X", 3600))
	for in, want := range map[string]string{
		"A/b.txt":     "A/b (conflict 2024-03-05 060809).txt",
		"a.tar.gz":    "a.tar (conflict 2024-03-05 060809).gz",
		"A/B/noext":   "A/B/noext (conflict 2024-03-05 060809)",
		".bashrc":     ".bashrc (conflict 2024-03-05 060809)",
		"d/.x.conf":   "d/.x (conflict 2024-03-05 060809).conf",
		"trailing.":   "trailing (conflict 2024-03-05 060809).",
		"é/ü.données": "é/ü (conflict 2024-03-05 060809).données",
	} {
		if got := ConflictName(in, at); got != want {
			t.Errorf("ConflictName(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("x", 250) + ".txt"
	got := ConflictName("d/"+long, at)
	if n := len([]rune(strings.TrimPrefix(got, "d/"))); n != 255 || !strings.HasSuffix(got, ").txt") {
		t.Errorf("long name: %q (%d characters)", got, n)
	}
}

func TestCacheAdoptsPublishedContent(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	c, err := cache.Open(cache.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg := e.config()
	cfg.Cache = c
	q := e.open(cfg)

	f, err := c.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(300_000)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := q.Enqueue(Job{Key: "c", Path: "cached.bin", Staging: f.Name()}); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctxT(t, 20*time.Second), "c"); err != nil {
		t.Fatal(err)
	}
	id, v := e.expectFile("cached.bin", data)
	ent, err := c.Acquire(cache.Key{FileID: id, Version: string(v)}, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer ent.Release()
	if !ent.Complete() {
		t.Fatal("published version not complete in the cache")
	}
	got := make([]byte, len(data))
	noFetch := func(context.Context, io.WriterAt, int64, int64) error {
		t.Error("cache fetched adopted content")
		return errors.New("no fetch")
	}
	if _, err := ent.ReadAt(context.Background(), got, 0, noFetch); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("cached content differs")
	}
	if exists(f.Name()) {
		t.Error("staging file kept")
	}
}

func TestDelayTimerPublishes(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = 500 * time.Millisecond
	q := e.open(cfg)
	start := time.Now()
	for i := range 3 {
		if err := q.Enqueue(Job{Key: "t", Path: "timer.txt", Staging: e.stage([]byte{byte('a' + i)})}); err != nil {
			t.Fatal(err)
		}
	}
	// The three closes coalesce only if they all came within Delay (three
	// journal fsyncs, slow on a loaded disk): otherwise a first publish is
	// right to start.
	coalesced := time.Since(start) < cfg.Delay
	// No Wait/Drain: only the scheduler's timer can start it.
	eventually(t, "the delayed publish", func() bool { _, ok := q.Pending("t"); return !ok })
	if el := time.Since(start); el < cfg.Delay {
		t.Errorf("published after %v, before Delay %v", el, cfg.Delay)
	}
	e.expectFile("timer.txt", []byte("c"))
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 && coalesced {
		t.Errorf("registers = %d, want 1", n)
	}
}

func TestSecondEditAfterConflictIsAConflictCopyToo(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	release := make(chan struct{})
	reg := make(chan *remote.UploadTicket, 4)
	e.hook.set(func(h *hookPublisher) { h.holdReg, h.registered = release, reg })
	q := e.open(e.config())
	id, base, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "x.txt", []byte("base"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "x.txt", []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	j := Job{Key: "x", Path: "x.txt", FileID: id, BaseVersion: remote.VersionID(base), Staging: e.stage([]byte("ours 1"))}
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	<-reg
	j.Staging = e.stage([]byte("ours 2"))
	if err := q.Enqueue(j); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := q.Wait(ctxT(t, 20*time.Second), "x"); err != nil {
		t.Fatal(err)
	}
	rs := e.results()
	if len(rs) != 2 || rs[0].ConflictPath == "" || rs[1].ConflictPath == "" {
		t.Fatalf("results %+v", rs)
	}
	e.expectFile("x.txt", []byte("theirs"))
	e.expectFile(rs[1].ConflictPath, []byte("ours 2"))
}

func TestRestartKeepsInFlightAndQueuedInOrder(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	hold := make(chan struct{}) // never closed: Close interrupts the first publish
	reg := make(chan *remote.UploadTicket, 4)
	e.hook.set(func(h *hookPublisher) { h.holdReg, h.registered = hold, reg })
	q := e.open(e.config())
	first, second := []byte("first"), []byte("second")
	if err := q.Enqueue(Job{Key: "k", Path: "two.txt", Staging: e.stage(first)}); err != nil {
		t.Fatal(err)
	}
	tk := <-reg
	if err := q.Enqueue(Job{Key: "k", Path: "two.txt", Staging: e.stage(second)}); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if n := len(e.journal()); n != 2 {
		t.Fatalf("journal has %d records, want 2", n)
	}

	e.hook.set(func(h *hookPublisher) { h.holdReg = nil })
	q = e.open(e.config())
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	id, _ := e.expectFile("two.txt", second)
	rs := e.results()
	if len(rs) != 2 || rs[0].Meta.VersionID != tk.VersionID || rs[1].Job.FileID != id || rs[1].Job.BaseVersion != tk.VersionID {
		t.Fatalf("results %+v, first ticket %+v", rs, tk)
	}
	if n := e.ts.Requests(emulator.OpUpdateByID); n != 1 {
		t.Errorf("update-by-id = %d, want 1 (second publish by id)", n)
	}
}

// A job taken back for more writing keeps its record until the key is
// enqueued again: a crash in between publishes the staging file as it then
// is (the bytes promised at the first close, and more), never nothing; a
// rename meanwhile is followed.
func TestTakenBackJobSurvivesACrash(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour // stays queued until taken back
	q := e.open(cfg)
	stg := e.stage([]byte("closed once"))
	if err := q.Enqueue(Job{Key: "k", Path: "a.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Take("k"); !ok {
		t.Fatal("Take failed")
	}
	if _, ok := q.Pending("k"); ok {
		t.Fatal("a taken-back job is still pending")
	}
	if recs := e.records(); len(recs) != 1 {
		t.Fatalf("journal after Take: %v, want the record kept", recs)
	}
	q.Rename("k", "b.txt")
	more := []byte("closed once, then written again")
	if err := os.WriteFile(stg, more, 0o600); err != nil {
		t.Fatal(err)
	}
	q.Close() // the process dies before the next close: records stay

	q = e.open(e.config())
	if err := q.Wait(ctxT(t, 20*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	e.expectFile("b.txt", more)
	eventually(t, "the journal to empty", func() bool { return len(e.records()) == 0 })
}

// A held job's record goes when the key is enqueued again (after the new
// record is written), cancelled or released; the staging file, the
// caller's since Take, stays.
func TestTakenBackJobEnds(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)
	for _, end := range []string{"enqueue", "cancel", "release"} {
		stg := e.stage([]byte(end))
		if err := q.Enqueue(Job{Key: end, Path: end + ".txt", Staging: stg}); err != nil {
			t.Fatal(err)
		}
		if _, ok := q.Take(end); !ok {
			t.Fatalf("%s: Take failed", end)
		}
		switch end {
		case "enqueue":
			if err := q.Enqueue(Job{Key: end, Path: end + ".txt", Staging: stg}); err != nil {
				t.Fatal(err)
			}
		case "cancel":
			q.Cancel(end)
		case "release":
			q.Release(end)
		}
		if !exists(stg) {
			t.Fatalf("%s removed the caller's staging file", end)
		}
	}
	recs := e.records()
	if len(recs) != 1 {
		t.Fatalf("journal %v, want only the re-enqueued job", recs)
	}
	raw, err := os.ReadFile(filepath.Join(e.dir, recs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("enqueue.txt")) {
		t.Fatalf("the record left is not the re-enqueued job:\n%s", raw)
	}
}

// A new file published by path onto a path whose old file is deleted
// between the register and the poll (a rename over it settles, say) is
// published again by path as a new file, never failed for good.
func TestPublishByPathWhoseFileIsDeletedMidway(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "cfg.lock", []byte("old lock")); err != nil {
		t.Fatal(err)
	}
	oldID, _ := e.expectFile("cfg.lock", []byte("old lock"))
	hold := make(chan struct{})
	e.hook.set(func(h *hookPublisher) {
		h.holdReg = hold
		h.registered = make(chan *remote.UploadTicket, 4)
	})
	q := e.open(e.config())
	data := []byte("new lock")
	if err := q.Enqueue(Job{Key: "l", Path: "cfg.lock", Staging: e.stage(data)}); err != nil {
		t.Fatal(err)
	}
	select {
	case tk := <-e.hook.registered:
		if tk.FileID != oldID {
			t.Fatalf("registered into %v, want the existing file %v", tk.FileID, oldID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never registered")
	}
	if err := e.ts.DeleteFile(e.ts.Org, e.ts.Workspace, "cfg.lock"); err != nil {
		t.Fatal(err)
	}
	e.hook.set(func(h *hookPublisher) { h.holdReg = nil })
	close(hold)
	if err := q.Wait(ctxT(t, 20*time.Second), "l"); err != nil {
		t.Fatal(err)
	}
	if id, _ := e.expectFile("cfg.lock", data); id == oldID {
		t.Error("published into the deleted file")
	}
}

// insertOldest keeps the oldest due jobs, at most max, oldest first; ties
// go by Seq.
func TestInsertOldestKeepsTheOldest(t *testing.T) {
	base := time.Unix(1000, 0)
	mk := func(sec int, seq uint64) *job {
		return &job{due: base.Add(time.Duration(sec) * time.Second), rec: record{Seq: seq}}
	}
	in := []*job{mk(5, 1), mk(1, 2), mk(9, 3), mk(1, 1), mk(3, 4), mk(0, 9), mk(7, 5)}
	var due []*job
	for _, j := range in {
		due = insertOldest(due, j, 3)
	}
	want := []*job{in[5], in[3], in[1]} // 0 s; 1 s seq 1; 1 s seq 2
	if len(due) != len(want) {
		t.Fatalf("got %d jobs, want %d", len(due), len(want))
	}
	for i := range want {
		if due[i] != want[i] {
			t.Errorf("due[%d] = %v seq %d, want %v seq %d", i, due[i].due.Sub(base), due[i].rec.Seq, want[i].due.Sub(base), want[i].rec.Seq)
		}
	}
	if got := insertOldest(nil, in[0], 0); len(got) != 0 {
		t.Errorf("max 0 kept %d jobs", len(got))
	}
}
