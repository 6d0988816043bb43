package remote

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evofs/remote/emulator"

	"github.com/google/uuid"
)

// These tests run the client against the real emulator over loopback HTTP.

type env struct {
	ts *emulator.TestServer
	c  *Client
}

func newEnv(t *testing.T, o emulator.Options, mut func(*Config)) *env {
	t.Helper()
	ts := emulator.NewTestServer(t, o)
	cfg := Config{
		BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: StaticToken(ts.Token),
		Retry:              RetryPolicy{MaxAttempts: 5, MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond},
		SinglePutThreshold: 128 << 10,
		BlockSize:          64 << 10,
		Concurrency:        4,
		PollMin:            5 * time.Millisecond,
		PollMax:            50 * time.Millisecond,
		PollTimeout:        20 * time.Second,
	}
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{ts: ts, c: c}
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7}).Read(b)
	return b
}

// memWriterAt is an io.WriterAt over a fixed buffer.
type memWriterAt []byte

func (m memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write outside buffer")
	}
	return copy(m[off:], p), nil
}

func (e *env) publish(t *testing.T, tg Target, data []byte) *FileMeta {
	t.Helper()
	m, err := e.c.Publish(t.Context(), tg, bytes.NewReader(data), int64(len(data)), PublishOptions{})
	if err != nil {
		t.Fatalf("publish %s: %v", tg, err)
	}
	return m
}

// plainGet fetches a pre-signed URL with bare net/http (an independent check).
func plainGet(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET blob: %d %v", resp.StatusCode, err)
	}
	return b
}

func (e *env) download(t *testing.T, m *FileMeta) []byte {
	t.Helper()
	buf := make(memWriterAt, m.Size)
	if err := e.c.Download(t.Context(), e.c.NewBlob(m), buf, 0, m.Size, nil); err != nil {
		t.Fatalf("download: %v", err)
	}
	return buf
}

func TestEndpoints(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	ctx := t.Context()
	c := e.c

	if s, err := c.Health(ctx); err != nil || s != "pass" {
		t.Fatalf("Health = %q, %v", s, err)
	}
	v1 := []byte("first version")
	m1 := e.publish(t, Target{Path: "/Dir/Sub/a b.txt"}, v1)
	if m1.Name != "a b.txt" || m1.Path != "/Dir/Sub/" || m1.FullPath() != "Dir/Sub/a b.txt" || m1.Size != int64(len(v1)) {
		t.Fatalf("published metadata %+v", m1)
	}
	if !bytes.Equal(plainGet(t, m1.Download), v1) {
		t.Fatal("published content differs")
	}

	// Get by path (case-insensitive) and by id.
	gp, err := c.GetByPath(ctx, "dir/SUB/A B.txt", GetOptions{})
	if err != nil || gp.FileID != m1.FileID || gp.VersionID != m1.VersionID {
		t.Fatalf("GetByPath = %+v, %v", gp, err)
	}
	// New version by id, then pin the old one.
	v2 := []byte("second, longer version")
	m2 := e.publish(t, Target{FileID: m1.FileID}, v2)
	if m2.FileID != m1.FileID || !m1.VersionID.Less(m2.VersionID) {
		t.Fatalf("second version %+v after %+v", m2, m1)
	}
	gi, err := c.GetByID(ctx, m1.FileID, GetOptions{IncludeVersions: true})
	if err != nil || gi.VersionID != m2.VersionID || len(gi.Versions) != 2 {
		t.Fatalf("GetByID = %+v, %v", gi, err)
	}
	old, err := c.GetByID(ctx, m1.FileID, GetOptions{VersionID: m1.VersionID})
	if err != nil || old.Size != int64(len(v1)) {
		t.Fatalf("pinned GetByID = %+v, %v", old, err)
	}
	if got := e.download(t, old); !bytes.Equal(got, v1) {
		t.Fatalf("old version content %q", got)
	}
	if got := e.download(t, gi); !bytes.Equal(got, v2) {
		t.Fatalf("new version content %q", got)
	}
	// Partial download at an offset.
	part := make(memWriterAt, len(v2))
	if err := c.Download(ctx, c.NewBlob(gi), part, 3, 5, nil); err != nil || string(part[3:8]) != string(v2[3:8]) {
		t.Fatalf("partial download %q, %v", part, err)
	}
	if err := c.Download(ctx, c.NewBlob(gi), part, 3, int64(len(v2)), nil); err == nil {
		t.Fatal("download past the end accepted")
	}

	// Listing: paging by offset+count<total, de-duplicated.
	for i := range 5 {
		e.publish(t, Target{Path: "list/f" + string(rune('0'+i))}, []byte{byte(i)})
	}
	page, err := c.List(ctx, ListOptions{Limit: 2})
	if err != nil || page.Count != 2 || page.Total != 6 || len(page.Files) != 2 {
		t.Fatalf("List = %+v, %v", page, err)
	}
	all, err := c.ListAll(ctx, ListOptions{Limit: 2})
	if err != nil || len(all) != 6 {
		t.Fatalf("ListAll = %d files, %v", len(all), err)
	}
	named, err := c.ListAll(ctx, ListOptions{FileName: "B.TX"})
	if err != nil || len(named) != 1 || named[0].FileID != m1.FileID || named[0].VersionID != m2.VersionID {
		t.Fatalf("ListAll(file_name) = %+v, %v", named, err)
	}
	mine, err := c.ListAll(ctx, ListOptions{Author: []uuid.UUID{uuid.New()}})
	if err != nil || len(mine) != 0 {
		t.Fatalf("ListAll(author) = %+v, %v", mine, err)
	}
	recent, err := c.ListAll(ctx, ListOptions{ModifiedAt: []TimeFilter{{Op: "gte", At: time.Now().Add(-time.Hour)}}, OrderBy: "desc:modified_at"})
	if err != nil || len(recent) != 6 {
		t.Fatalf("ListAll(modified_at) = %d, %v", len(recent), err)
	}

	// Delete by path, then the deleted views, then restore.
	if err := c.DeleteByPath(ctx, "dir/sub/a b.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetByPath(ctx, "dir/sub/a b.txt", GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetByPath after delete: %v", err)
	}
	if _, err := c.GetByID(ctx, m1.FileID, GetOptions{}); !errors.Is(err, ErrGone) {
		t.Fatalf("GetByID after delete: %v", err)
	}
	del, err := c.GetByID(ctx, m1.FileID, GetOptions{Deleted: true})
	if err != nil || del.DeletedAt == nil || del.DeletedAt.IsZero() {
		t.Fatalf("GetByID(deleted) = %+v, %v", del, err)
	}
	gone, err := c.ListAll(ctx, ListOptions{Deleted: true})
	if err != nil || len(gone) != 1 || gone[0].FileID != m1.FileID {
		t.Fatalf("ListAll(deleted) = %+v, %v", gone, err)
	}
	e.ts.ResetRequests()
	if err := c.DeleteByPath(ctx, "dir/sub/a b.txt"); err != nil {
		t.Fatalf("second delete by path: %v", err)
	}
	if err := c.DeleteByID(ctx, m1.FileID); err != nil {
		t.Fatalf("delete by id of a deleted file: %v", err)
	}
	if n := e.ts.Requests(emulator.OpDeleteByPath) + e.ts.Requests(emulator.OpDeleteByID); n != 2 {
		t.Fatalf("404 deletes took %d requests, want 2 (not retried)", n)
	}
	if m, err := c.Restore(ctx, m1.FileID); err != nil || m != nil {
		t.Fatalf("Restore = %+v, %v", m, err)
	}
	if gp, err := c.GetByPath(ctx, "Dir/Sub/a b.txt", GetOptions{}); err != nil || gp.VersionID != m2.VersionID {
		t.Fatalf("GetByPath after restore = %+v, %v", gp, err)
	}
	if err := c.DeleteByID(ctx, m1.FileID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetByID(ctx, m1.FileID, GetOptions{}); !errors.Is(err, ErrGone) {
		t.Fatalf("GetByID after delete by id: %v", err)
	}

	// Register by path on the deleted file's path gives a new file; restoring
	// the old one now conflicts.
	m3 := e.publish(t, Target{Path: "Dir/Sub/a b.txt"}, []byte("x"))
	if m3.FileID == m1.FileID {
		t.Fatal("upsert on a deleted path reused the deleted file")
	}
	if _, err := c.Restore(ctx, m1.FileID); !errors.Is(err, ErrConflict) {
		t.Fatalf("Restore onto an occupied path: %v, want ErrConflict", err)
	}
}

func TestRestoreSeeOther(t *testing.T) {
	e := newEnv(t, emulator.Options{RestoreSeeOther: true}, nil)
	m := e.publish(t, Target{Path: "r/x.bin"}, []byte("restore me"))
	if err := e.c.DeleteByID(t.Context(), m.FileID); err != nil {
		t.Fatal(err)
	}
	e.ts.ResetRequests()
	got, err := e.c.Restore(t.Context(), m.FileID)
	if err != nil || got == nil || got.FileID != m.FileID || got.FullPath() != "r/x.bin" {
		t.Fatalf("Restore (303) = %+v, %v", got, err)
	}
	// The 303 was not followed: one PUT, no GET.
	if n, g := e.ts.Requests(emulator.OpRestore), e.ts.Requests(emulator.OpGetByID); n != 1 || g != 0 {
		t.Fatalf("restore sent %d restores and %d gets, want 1 and 0", n, g)
	}
}

func TestPathEncodingRoundTrip(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	ctx := t.Context()
	names := []string{
		"a%2Fb", "100% sure", "hash#tag", "what?.txt", "sp ace/in side.txt", "ünïcödé/日本語.txt",
		"plus+sign", "amp&eq=semi;comma,", `back\slash:*"<>|`, "%41%", "emoji 🎉/x", "~tilde.-_",
	}
	ids := map[string]uuid.UUID{}
	for i, p := range names {
		m := e.publish(t, Target{Path: "enc/" + p}, []byte{byte(i)})
		if m.FullPath() != "enc/"+p {
			t.Errorf("published %q, service stored %q", p, m.FullPath())
		}
		ids[m.FullPath()] = m.FileID
	}
	all, err := e.c.ListAll(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(names) {
		t.Fatalf("listed %d files, want %d", len(all), len(names))
	}
	for _, f := range all {
		if ids[f.FullPath()] != f.FileID {
			t.Errorf("listed %q (%s) does not match a published name", f.FullPath(), f.FileID)
		}
	}
	for i, p := range names {
		m, err := e.c.GetByPath(ctx, "enc/"+p, GetOptions{})
		if err != nil || m.FileID != ids["enc/"+p] {
			t.Errorf("GetByPath(%q) = %+v, %v", p, m, err)
			continue
		}
		if got := plainGet(t, m.Download); len(got) != 1 || got[0] != byte(i) {
			t.Errorf("content of %q = %v", p, got)
		}
	}
	if err := e.c.DeleteByPath(ctx, "enc/a%2Fb"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.GetByPath(ctx, "enc/a%2Fb", GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := e.c.GetByPath(ctx, "enc/100% sure", GetOptions{}); err != nil {
		t.Fatalf("neighbour lost: %v", err)
	}
}

func TestNumericVersionIDs(t *testing.T) {
	e := newEnv(t, emulator.Options{NumericVersionIDs: true}, nil)
	ctx := t.Context()
	m1 := e.publish(t, Target{Path: "n.txt"}, []byte("1"))
	m2 := e.publish(t, Target{Path: "n.txt"}, []byte("22"))
	// Real-looking ids exceed 2^53: a float64 detour would merge or change them.
	if len(m1.VersionID) < 16 || !m1.VersionID.Less(m2.VersionID) {
		t.Fatalf("version ids %q, %q", m1.VersionID, m2.VersionID)
	}
	old, err := e.c.GetByID(ctx, m1.FileID, GetOptions{VersionID: m1.VersionID, IncludeVersions: true})
	if err != nil || old.VersionID != m1.VersionID || old.Size != 1 {
		t.Fatalf("pinned get = %+v, %v", old, err)
	}
	if len(old.Versions) != 2 || old.Versions[0].VersionID != m1.VersionID && old.Versions[1].VersionID != m1.VersionID {
		t.Fatalf("versions %+v", old.Versions)
	}
}

func TestErrorClassesFromService(t *testing.T) {
	e := newEnv(t, emulator.Options{Tokens: map[string]emulator.Grant{
		"viewer": {User: emulator.User{ID: uuid.New(), Name: "V"}, Role: emulator.RoleViewer},
	}}, nil)
	ctx := t.Context()
	c := e.c
	m := e.publish(t, Target{Path: "e/x.txt"}, []byte("payload"))
	ticket, err := c.UpsertByPath(ctx, "e/x.txt", "")
	if err != nil {
		t.Fatal(err)
	}

	check := func(name string, err, class error) {
		t.Helper()
		if !errors.Is(err, class) {
			t.Errorf("%s: %v, want %v", name, err, class)
			return
		}
		var ae *APIError
		var be *BlobError
		if !errors.As(err, &ae) && !errors.As(err, &be) && class != ErrInvalidPath && class != ErrURLExpired {
			t.Errorf("%s: %T is neither *APIError nor *BlobError", name, err)
		}
	}
	_, err = c.GetByPath(ctx, "e/none", GetOptions{})
	check("missing path", err, ErrNotFound)
	_, err = c.GetByID(ctx, m.FileID, GetOptions{VersionID: "1"})
	check("unknown version", err, ErrNotFound)
	_, err = c.GetByPath(ctx, "e/ bad", GetOptions{})
	check("local path check", err, ErrInvalidPath)
	_, err = c.List(ctx, ListOptions{FileName: "a/b"})
	check("service path check", err, ErrInvalidPath)
	_, err = c.List(ctx, ListOptions{Limit: 6000})
	check("limit", err, ErrValidation)
	var ae *APIError
	if errors.As(err, &ae) && (ae.Status != 422 || ae.Detail == "" || ae.Title != "Validation Error.") {
		t.Errorf("validation problem decoded as %+v", ae)
	}
	_, err = c.UpdateByID(ctx, m.FileID, m.VersionID)
	check("resume of a committed version", err, ErrNoUploadInProgress)
	_, err = c.UpdateByID(ctx, uuid.New(), "")
	check("update of an unknown id", err, ErrNotFound)

	viewer, _ := New(Config{BaseURL: e.ts.URL, Org: e.ts.Org, Workspace: e.ts.Workspace, Tokens: StaticToken("viewer")})
	_, err = viewer.UpsertByPath(ctx, "e/y.txt", "")
	check("viewer write", err, ErrForbidden)
	if errors.As(err, &ae) && (ae.YourRole != "viewer" || len(ae.PermittedRoles) == 0) {
		t.Errorf("403 problem decoded as %+v", ae)
	}
	if Retryable(err) {
		t.Errorf("403 should not be retryable")
	}
	bad, _ := New(Config{BaseURL: e.ts.URL, Org: e.ts.Org, Workspace: e.ts.Workspace, Tokens: StaticToken("nope")})
	_, err = bad.GetByID(ctx, m.FileID, GetOptions{})
	check("bad token", err, ErrUnauthorized)

	e.ts.FailNext(emulator.OpGetByID, 1, emulator.Fault{Status: 400})
	_, err = c.GetByID(ctx, m.FileID, GetOptions{})
	check("injected 400", err, ErrBadRequest)
	e.ts.FailNext(emulator.OpGetByID, 10, emulator.Fault{Status: 500})
	_, err = c.GetByID(ctx, m.FileID, GetOptions{})
	check("persistent 500", err, ErrServer)
	e.ts.ClearFaults()
	e.ts.FailNext(emulator.OpList, 10, emulator.Fault{Status: 429})
	_, err = c.List(ctx, ListOptions{})
	check("persistent 429", err, ErrThrottled)
	e.ts.ClearFaults()

	// Blob classes: a read-only URL used for writing, URLs that are expired
	// as soon as issued (renewal happens once, then the class surfaces), a
	// plain blob error.
	err = c.Upload(ctx, Target{Path: "e/x.txt"}, &UploadTicket{FileID: m.FileID, VersionID: ticket.VersionID, Upload: m.Download},
		strings.NewReader("z"), 1, nil)
	check("write through a read URL", err, ErrBlobPermission)
	// A clock that jumps an hour on every reading: each URL is expired by
	// the time it is used.
	var hours atomic.Int64
	e.ts.SetClock(func() time.Time { return time.Now().Add(time.Duration(hours.Add(1)) * time.Hour) })
	e.ts.ResetRequests()
	t2, err := c.UpsertByPath(ctx, "e/x.txt", "")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Upload(ctx, Target{Path: "e/x.txt"}, t2, strings.NewReader("z"), 1, nil)
	check("expired twice", err, ErrURLExpired)
	if n, r := e.ts.Requests(emulator.OpPutBlob), e.ts.Requests(emulator.OpUpsertByPath); n != 2 || r != 2 {
		t.Errorf("expired upload: %d put blob and %d registrations, want 2 and 2", n, r)
	}
	e.ts.SetClock(nil)
	e.ts.FailNext(emulator.OpGetBlob, 1, emulator.Fault{Status: 404})
	err = c.Download(ctx, c.NewBlob(m), make(memWriterAt, m.Size), 0, m.Size, nil)
	check("blob not found", err, ErrBlob)
	var be *BlobError
	if errors.As(err, &be) && (be.Code != "BlobNotFound" || be.Status != 404 || strings.Contains(err.Error(), "sig=")) {
		t.Errorf("blob error %+v: %q", be, err)
	}
}

// rawServer answers every request with 204 and records the request heads.
func rawServer(t *testing.T) (string, func() []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var heads []string
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					var head strings.Builder
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					mu.Lock()
					heads = append(heads, head.String())
					mu.Unlock()
					io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n")
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), heads...)
	}
}

func TestEmptyBodiedWritesSendContentLengthZero(t *testing.T) {
	u, heads := rawServer(t)
	c, err := New(Config{BaseURL: u, Org: uuid.New(), Workspace: uuid.New(), Tokens: StaticToken("t")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.DeleteByID(ctx, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteByPath(ctx, "a b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Restore(ctx, uuid.New()); err != nil {
		t.Fatal(err)
	}
	hs := heads()
	if len(hs) != 3 {
		t.Fatalf("%d requests", len(hs))
	}
	for _, h := range hs {
		if !strings.Contains(h, "\r\nContent-Length: 0\r\n") || !strings.Contains(h, "\r\nAuthorization: Bearer t\r\n") ||
			strings.Contains(h, "Transfer-Encoding") {
			t.Errorf("request head:\n%s", h)
		}
	}
	if !strings.HasPrefix(hs[1], "DELETE /file/v2/orgs/") || !strings.Contains(hs[1], "/files/path/a%20b/c HTTP/1.1") {
		t.Errorf("delete by path head:\n%s", hs[1])
	}
}
