package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evofs/remote/emulator"

	"github.com/google/uuid"
)

func TestRetriesUnderFaults(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	ctx := t.Context()
	m := e.publish(t, Target{Path: "r.txt"}, []byte("retry"))

	count := func(op emulator.Op, f func() error) (int, error) {
		e.ts.ResetRequests()
		err := f()
		return e.ts.Requests(op), err
	}
	get := func() error { _, err := e.c.GetByID(ctx, m.FileID, GetOptions{}); return err }

	e.ts.FailNext(emulator.OpGetByID, 2, emulator.Fault{Status: 503})
	if n, err := count(emulator.OpGetByID, get); err != nil || n != 3 {
		t.Errorf("2×503 then success: %d requests, %v; want 3, nil", n, err)
	}
	e.ts.FailNext(emulator.OpGetByID, 100, emulator.Fault{Status: 502})
	if n, err := count(emulator.OpGetByID, get); !errors.Is(err, ErrServer) || n != 5 {
		t.Errorf("persistent 502: %d requests, %v; want 5 (MaxAttempts), ErrServer", n, err)
	}
	e.ts.ClearFaults()
	e.ts.FailNext(emulator.OpGetByID, 3, emulator.Fault{Status: 404})
	if n, err := count(emulator.OpGetByID, get); !errors.Is(err, ErrNotFound) || n != 1 {
		t.Errorf("404: %d requests, %v; want 1 (no retry)", n, err)
	}
	e.ts.ClearFaults()
	e.ts.FailNext(emulator.OpGetByID, 1, emulator.Fault{Drop: true})
	if n, err := count(emulator.OpGetByID, get); err != nil || n != 2 {
		t.Errorf("dropped connection: %d requests, %v; want 2, nil", n, err)
	}
	e.ts.FailNext(emulator.OpUpsertByPath, 1, emulator.Fault{Status: 500})
	if n, err := count(emulator.OpUpsertByPath, func() error { _, err := e.c.UpsertByPath(ctx, "r2.txt", ""); return err }); err != nil || n != 2 {
		t.Errorf("register after 500: %d requests, %v", n, err)
	}
	e.ts.FailNext(emulator.OpDeleteByID, 1, emulator.Fault{Status: 503})
	if n, err := count(emulator.OpDeleteByID, func() error { return e.c.DeleteByID(ctx, uuid.New()) }); err != nil || n != 2 {
		t.Errorf("delete (503 then 404): %d requests, %v", n, err)
	}

	// Retry-After: 1 s is honoured even though the policy's own delays are ms.
	slow := newEnvClient(t, e.ts, func(c *Config) { c.Retry.MaxDelay = 3 * time.Second })
	e.ts.FailNext(emulator.OpList, 1, emulator.Fault{Status: 429, RetryAfter: time.Second})
	start := time.Now()
	if n, err := count(emulator.OpList, func() error { _, err := slow.List(ctx, ListOptions{}); return err }); err != nil || n != 2 {
		t.Errorf("429 Retry-After: %d requests, %v", n, err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("Retry-After 1 s: retried after %v", d)
	}
	// A Retry-After longer than the context allows ends the call at once.
	// ErrServer (not DeadlineExceeded) is what shows it did not wait; the
	// bounds are wide apart so a loaded machine cannot blur them.
	e.ts.FailNext(emulator.OpList, 1, emulator.Fault{Status: 503, RetryAfter: 60 * time.Second})
	short, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start = time.Now()
	if _, err := slow.List(short, ListOptions{}); !errors.Is(err, ErrServer) || time.Since(start) > 10*time.Second {
		t.Errorf("Retry-After past the deadline: %v after %v", err, time.Since(start))
	}
	// A cancelled context is not retried.
	e.ts.FailRate(emulator.OpList, 1, emulator.Fault{Latency: 50 * time.Millisecond, Status: 503})
	cctx, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := e.c.List(cctx, ListOptions{}); !errors.Is(err, context.DeadlineExceeded) || Retryable(err) {
		t.Errorf("cancelled: %v", err)
	}
	e.ts.ClearFaults()

	// Blob chunks retry on their own: 2×503 on one block, 1 dropped range GET.
	data := randBytes(3, 300<<10) // 5 blocks of 64 KiB
	e.ts.FailNext(emulator.OpPutBlock, 2, emulator.Fault{Status: 503})
	e.ts.ResetRequests()
	m2 := e.publish(t, Target{Path: "blocks.bin"}, data)
	if n := e.ts.Requests(emulator.OpPutBlock); n != 7 {
		t.Errorf("put block requests %d, want 5 + 2 retries", n)
	}
	e.ts.FailNext(emulator.OpGetBlob, 1, emulator.Fault{Drop: true})
	e.ts.ResetRequests()
	if got := e.download(t, m2); !bytes.Equal(got, data) {
		t.Error("download after a dropped range differs")
	}
	if n := e.ts.Requests(emulator.OpGetBlob); n != 6 {
		t.Errorf("get blob requests %d, want 5 + 1 retry", n)
	}
}

// newEnvClient is another client on the same server.
func newEnvClient(t *testing.T, ts *emulator.TestServer, mut func(*Config)) *Client {
	cfg := Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: StaticToken(ts.Token),
		Retry: RetryPolicy{MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond}}
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rotatingTokens hands out stale until refreshed, then fresh.
type rotatingTokens struct {
	stale, fresh string
	refreshes    atomic.Int32
}

func (r *rotatingTokens) Token(_ context.Context, refresh bool) (string, error) {
	if refresh {
		r.refreshes.Add(1)
	}
	if r.refreshes.Load() > 0 {
		return r.fresh, nil
	}
	return r.stale, nil
}

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{Tokens: map[string]emulator.Grant{
		"fresh": {User: emulator.User{ID: uuid.New()}, Role: emulator.RoleEditor},
	}})
	ctx := t.Context()
	src := &rotatingTokens{stale: "expired", fresh: "fresh"}
	c := newEnvClient(t, ts, func(c *Config) { c.Tokens = src })
	ts.ResetRequests()
	if _, err := c.List(ctx, ListOptions{}); err != nil {
		t.Fatalf("list with a refreshable token: %v", err)
	}
	if n, r := ts.Requests(emulator.OpList), src.refreshes.Load(); n != 2 || r != 1 {
		t.Fatalf("%d requests, %d refreshes; want 2 and 1", n, r)
	}
	// A token that stays bad: one refresh, one replay, then ErrUnauthorized.
	bad := &rotatingTokens{stale: "x", fresh: "y"}
	c2 := newEnvClient(t, ts, func(c *Config) { c.Tokens = bad })
	ts.ResetRequests()
	if _, err := c2.List(ctx, ListOptions{}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	if n, r := ts.Requests(emulator.OpList), bad.refreshes.Load(); n != 2 || r != 1 {
		t.Fatalf("bad token: %d requests, %d refreshes; want 2 and 1", n, r)
	}
}

func TestUploadURLExpiryResendsOnlyUnacknowledged(t *testing.T) {
	e := newEnv(t, emulator.Options{}, func(c *Config) { c.Concurrency = 1 })
	ctx := t.Context()
	data := randBytes(5, 6*(64<<10)+123) // 7 blocks
	ticket, err := e.c.UpsertByPath(ctx, "exp/up.bin", "")
	if err != nil {
		t.Fatal(err)
	}
	first := ticket.Upload
	e.ts.ResetRequests()
	var once sync.Once
	var last int64
	err = e.c.Upload(ctx, Target{Path: "exp/up.bin"}, ticket, bytes.NewReader(data), int64(len(data)), func(done int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last = done
		once.Do(e.ts.ExpireURLs) // after the first acknowledged block
	})
	if err != nil {
		t.Fatalf("upload across an expiry: %v", err)
	}
	if last != int64(len(data)) {
		t.Errorf("progress ended at %d", last)
	}
	// Block 2 hit the expired URL once; nothing acknowledged was re-sent.
	if n := e.ts.Requests(emulator.OpPutBlock); n != 8 {
		t.Errorf("put block requests %d, want 7 + 1", n)
	}
	if n := e.ts.Requests(emulator.OpUpsertByPath); n != 1 {
		t.Errorf("renewals %d, want 1", n)
	}
	if ticket.Upload == first {
		t.Error("ticket keeps the expired URL")
	}
	m, err := e.c.WaitVisible(ctx, ticket.FileID, ticket.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plainGet(t, m.Download), data) {
		t.Fatal("content differs after renewal")
	}

	// Concurrent workers, by id: every worker may meet the expiry, one renewal.
	e2 := newEnv(t, emulator.Options{}, nil)
	m0 := e2.publish(t, Target{Path: "exp/id.bin"}, []byte("v0"))
	ticket, err = e2.c.UpdateByID(ctx, m0.FileID, "")
	if err != nil {
		t.Fatal(err)
	}
	e2.ts.ResetRequests()
	once = sync.Once{}
	big := randBytes(6, 40*(64<<10))
	err = e2.c.Upload(ctx, Target{FileID: m0.FileID}, ticket, bytes.NewReader(big), int64(len(big)), func(done int64) {
		if done >= 10*(64<<10) {
			once.Do(e2.ts.ExpireURLs)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, r := e2.ts.Requests(emulator.OpPutBlock), e2.ts.Requests(emulator.OpUpdateByID); n > 40+4 || r != 1 {
		t.Errorf("concurrent: %d put blocks (want <= 44), %d renewals (want 1)", n, r)
	}
	m, err = e2.c.WaitVisible(ctx, m0.FileID, ticket.VersionID)
	if err != nil || !bytes.Equal(plainGet(t, m.Download), big) {
		t.Fatalf("concurrent renewal content: %v", err)
	}

	// Expiry during commit: the block list is re-sent on the new URL.
	ticket, err = e2.c.UpdateByID(ctx, m0.FileID, "")
	if err != nil {
		t.Fatal(err)
	}
	e2.ts.ResetRequests()
	small := randBytes(7, 3*(64<<10))
	err = e2.c.Upload(ctx, Target{FileID: m0.FileID}, ticket, bytes.NewReader(small), int64(len(small)), func(done int64) {
		if done == int64(len(small)) {
			e2.ts.ExpireURLs()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, b := e2.ts.Requests(emulator.OpPutBlockList), e2.ts.Requests(emulator.OpPutBlock); n != 2 || b != 3 {
		t.Errorf("commit across expiry: %d block lists (want 2), %d blocks (want 3)", n, b)
	}
}

func TestDownloadURLExpiry(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	ctx := t.Context()
	data := randBytes(8, 20*(64<<10)+1)
	m := e.publish(t, Target{Path: "exp/down.bin"}, data)
	b := e.c.NewBlob(m)
	e.ts.ExpireURLs()
	e.ts.ResetRequests()
	buf := make(memWriterAt, len(data))
	var last atomic.Int64
	if err := e.c.Download(ctx, b, buf, 0, m.Size, func(d int64) { last.Store(d) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data) || last.Load() != m.Size {
		t.Fatalf("content differs after renewal (progress %d)", last.Load())
	}
	if n := e.ts.Requests(emulator.OpGetByID); n != 1 {
		t.Errorf("renewals %d, want 1", n)
	}
	if b.URL() == m.Download {
		t.Error("blob keeps the expired URL")
	}
	// The renewed URL serves the next download without any API call.
	e.ts.ResetRequests()
	if err := e.c.Download(ctx, b, buf, 0, m.Size, nil); err != nil || e.ts.Requests(emulator.OpGetByID) != 0 {
		t.Fatalf("second download: %v, %d renewals", err, e.ts.Requests(emulator.OpGetByID))
	}
	// A listing row has no URL: the first download fetches one.
	rows, err := e.c.ListAll(ctx, ListOptions{})
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	clear(buf)
	if err := e.c.Download(ctx, e.c.NewBlob(&rows[0]), buf, 0, m.Size, nil); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("download from a listing row: %v", err)
	}
	// Deleted files stay readable through a renewal.
	if err := e.c.DeleteByID(ctx, m.FileID); err != nil {
		t.Fatal(err)
	}
	e.ts.ExpireURLs()
	if err := e.c.Download(ctx, b, buf, 0, m.Size, nil); err != nil {
		t.Fatalf("download of a deleted file: %v", err)
	}
}

func TestLargeUploadDownloadExact(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 8 << 20
	}
	e := newEnv(t, emulator.Options{}, func(c *Config) {
		c.BlockSize = 4 << 20
		c.SinglePutThreshold = 4 << 20
		c.Concurrency = 4
	})
	data := randBytes(9, size+12345)
	want := sha256.Sum256(data)
	e.ts.ResetRequests()
	m := e.publish(t, Target{Path: "big/64MiB.bin"}, data)
	if m.Size != int64(len(data)) {
		t.Fatalf("size %d", m.Size)
	}
	if n := e.ts.Requests(emulator.OpPutBlock); n != (len(data)+(4<<20)-1)/(4<<20) {
		t.Errorf("%d put blocks", n)
	}
	buf := make(memWriterAt, len(data))
	if err := e.c.Download(t.Context(), e.c.NewBlob(m), buf, 0, m.Size, nil); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(buf) != want {
		t.Fatal("downloaded bytes differ")
	}
	if sha256.Sum256(plainGet(t, m.Download)) != want {
		t.Fatal("stored bytes differ")
	}
}

func TestPublishFlows(t *testing.T) {
	e := newEnv(t, emulator.Options{PublishDelay: 150 * time.Millisecond}, nil)
	ctx := t.Context()

	// Polling until visible, with the OnRegistered hook before any byte.
	var registered *UploadTicket
	e.ts.ResetRequests()
	m, err := e.c.Publish(ctx, Target{Path: "p/new.txt"}, bytes.NewReader([]byte("hello")), 5, PublishOptions{
		OnRegistered: func(t *UploadTicket) { registered = t },
	})
	if err != nil {
		t.Fatal(err)
	}
	if registered == nil || registered.VersionID != m.VersionID || m.Size != 5 {
		t.Fatalf("ticket %+v, meta %+v", registered, m)
	}
	if n := e.ts.Requests(emulator.OpGetByID); n < 2 {
		t.Errorf("a delayed publish polled %d times", n)
	}
	if e.ts.Requests(emulator.OpPutBlob) != 1 || e.ts.Requests(emulator.OpPutBlock) != 0 {
		t.Error("a small file did not use one Put Blob")
	}

	// Zero-length file.
	z, err := e.c.Publish(ctx, Target{Path: "p/empty"}, bytes.NewReader(nil), 0, PublishOptions{})
	if err != nil || z.Size != 0 {
		t.Fatalf("empty publish: %+v, %v", z, err)
	}
	if got := plainGet(t, z.Download); len(got) != 0 {
		t.Fatalf("empty file has %d bytes", len(got))
	}
	if err := e.c.Download(ctx, e.c.NewBlob(z), memWriterAt(nil), 0, 0, nil); err != nil {
		t.Fatal(err)
	}

	// Resume of an uncommitted ticket: same version, fresh URL.
	pending, err := e.c.UpsertByPath(ctx, "p/resume.txt", "")
	if err != nil {
		t.Fatal(err)
	}
	m, err = e.c.Publish(ctx, Target{Path: "p/resume.txt"}, bytes.NewReader([]byte("resumed")), 7, PublishOptions{Resume: pending})
	if err != nil || m.VersionID != pending.VersionID {
		t.Fatalf("resume: %+v, %v (ticket %s)", m, err, pending.VersionID)
	}
	// Resume of a committed ticket: straight to polling, nothing uploaded.
	e.ts.ResetRequests()
	m2, err := e.c.Publish(ctx, Target{Path: "p/resume.txt"}, bytes.NewReader([]byte("other")), 5, PublishOptions{Resume: pending})
	if err != nil || m2.VersionID != pending.VersionID || m2.Size != 7 {
		t.Fatalf("resume of a committed version: %+v, %v", m2, err)
	}
	if e.ts.Requests(emulator.OpPutBlob) != 0 {
		t.Error("resume of a committed version uploaded again")
	}
	// Resume of an unknown version: registers anew.
	stale := *pending
	stale.VersionID = "12345"
	m3, err := e.c.Publish(ctx, Target{FileID: m.FileID}, bytes.NewReader([]byte("anew")), 4, PublishOptions{Resume: &stale})
	if err != nil || m3.VersionID == stale.VersionID || !m2.VersionID.Less(m3.VersionID) {
		t.Fatalf("resume of an unknown version: %+v, %v", m3, err)
	}

	// Superseded: a later registration commits first; ours still resolves.
	t1, _ := e.c.Register(ctx, Target{FileID: m.FileID}, "")
	t2, _ := e.c.Register(ctx, Target{FileID: m.FileID}, "")
	if err := e.c.Upload(ctx, Target{FileID: m.FileID}, t2, bytes.NewReader([]byte("two")), 3, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.WaitVisible(ctx, m.FileID, t2.VersionID); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Upload(ctx, Target{FileID: m.FileID}, t1, bytes.NewReader([]byte("one")), 3, nil); err != nil {
		t.Fatal(err)
	}
	got, err := e.c.WaitVisible(ctx, m.FileID, t1.VersionID)
	if err != nil || got.VersionID != t1.VersionID || got.Size != 3 {
		t.Fatalf("superseded version: %+v, %v", got, err)
	}

	// Never visible within PollTimeout.
	e.ts.SetPublishDelay(time.Hour)
	quick := newEnvClient(t, e.ts, func(c *Config) { c.PollTimeout = 200 * time.Millisecond; c.PollMin = 10 * time.Millisecond })
	start := time.Now()
	_, err = quick.Publish(ctx, Target{Path: "p/late.txt"}, bytes.NewReader([]byte("late")), 4, PublishOptions{})
	if !errors.Is(err, ErrNotVisible) || !Retryable(err) {
		t.Fatalf("publish never visible: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("poll timeout took %v", d)
	}
}

// TestPresignedQueryKeptAsIssued checks the wire form of blob requests: the
// pre-signed query string is sent byte for byte, with comp/blockid appended.
func TestPresignedQueryKeptAsIssued(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	}))
	defer hs.Close()
	c := newEnvClient(t, &emulator.TestServer{URL: hs.URL, Org: uuid.New(), Workspace: uuid.New()}, func(c *Config) {
		c.BlockSize, c.SinglePutThreshold, c.Concurrency = 4, 4, 1
	})
	const q = "sv=2023-08-03&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=wt&rscd=attachment%3B%20filename%2A%3DUTF-8%27%27a%20b&sig=AbC%2Bd%2F%3D"
	tk := &UploadTicket{FileID: uuid.New(), VersionID: "1", Upload: hs.URL + "/blob/x?" + q}
	if err := c.Upload(t.Context(), Target{Path: "x"}, tk, bytes.NewReader([]byte("123456")), 6, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{q + "&blockid=" + url.QueryEscape(BlockID(0)) + "&comp=block",
		q + "&blockid=" + url.QueryEscape(BlockID(4)) + "&comp=block", q + "&comp=blocklist"}
	if fmt.Sprint(queries) != fmt.Sprint(want) {
		t.Fatalf("queries\n%q\nwant\n%q", queries, want)
	}
}
