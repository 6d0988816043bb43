package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/fusefs/vfs"
	"evofs/writeback"
)

// source is a status that tests change under a lock.
type source struct {
	mu sync.Mutex
	st vfs.Status
}

func (s *source) Status() vfs.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Jobs = append([]writeback.JobStatus(nil), s.st.Jobs...)
	return st
}

func (s *source) set(f func(st *vfs.Status)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(discard{})
	return logrus.NewEntry(l)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// longDir returns a directory whose socket path is longer than a unix
// socket address may be, as under a cache dir named by org and workspace.
func longDir(t *testing.T) string {
	d := filepath.Join(t.TempDir(), strings.Repeat("o", 40), strings.Repeat("w", 40))
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func listen(t *testing.T, src StatusSource) (*Server, *Client) {
	t.Helper()
	p := filepath.Join(longDir(t), SocketName)
	if len(p) < 108 {
		t.Fatalf("test path %d bytes; want one too long for sun_path", len(p))
	}
	s, err := Listen(p, "/mnt/evo", src, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := NewClient(p)
	t.Cleanup(c.CloseIdle)
	return s, c
}

func jobs(n int, state writeback.State) []writeback.JobStatus {
	out := make([]writeback.JobStatus, n)
	for i := range out {
		out[i] = writeback.JobStatus{Job: writeback.Job{Key: fmt.Sprint("k", i), Path: fmt.Sprintf("dir/file-%05d.txt", i), Staging: "/secret/staging"},
			State: state, Size: 100, Done: 40, Tries: 2, LastError: "connection refused", Queued: time.Unix(1700000000, 0)}
	}
	return out
}

func TestStatusOfTenThousandFiles(t *testing.T) {
	src := &source{st: vfs.Status{Online: true, Jobs: jobs(10000, writeback.StatePending),
		Cache: cache.Usage{Bytes: 5, MaxBytes: 10, Entries: 1, Staging: 7}}}
	s, c := listen(t, src)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	r, raw, err := c.Status(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Files) != 10000 || r.Pending != 10000 || r.UnpublishedBytes != 10000*60 || r.Version != SchemaVersion || r.Mountpoint != "/mnt/evo" {
		t.Fatalf("report: %d files, pending %d, unpublished %d, version %d, mountpoint %q", len(r.Files), r.Pending, r.UnpublishedBytes, r.Version, r.Mountpoint)
	}
	if r.Cache != (CacheReport{UsedBytes: 5, MaxBytes: 10, Entries: 1, StagingBytes: 7}) {
		t.Fatalf("cache %+v", r.Cache)
	}
	f := r.Files[9999]
	if f.Path != "dir/file-09999.txt" || f.State != "pending" || f.SizeBytes != 100 || f.UploadedBytes != 40 || f.Tries != 2 || f.LastError != "connection refused" {
		t.Fatalf("file %+v", f)
	}
	for _, internal := range []string{`"staging"`, "/secret", `"key"`, "file_id"} {
		if strings.Contains(string(raw), internal) {
			t.Fatalf("status JSON shows the internal %q", internal)
		}
	}
	sum, _, err := c.Status(context.Background(), false)
	if err != nil || len(sum.Files) != 0 || sum.Pending != 10000 {
		t.Fatalf("summary: %+v, %v", sum, err)
	}
}

func TestSocketRefusesSecondServerAndReplacesStale(t *testing.T) {
	p := filepath.Join(longDir(t), SocketName)
	s, err := Listen(p, "/m", &source{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(p, "/m", &source{}, quiet()); err == nil {
		t.Fatal("a second server took over a live socket")
	}
	s.Close()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	// A socket file nobody serves (a process killed with -9).
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Listen(p, "/m", &source{}, quiet())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s.Close()
}

func TestWaitOutcomes(t *testing.T) {
	src := &source{st: vfs.Status{Online: true, Jobs: jobs(3, writeback.StateUploading)}}
	s, c := listen(t, src)
	wait := func(d time.Duration) Outcome {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		o, _, _ := c.Wait(ctx, 5*time.Millisecond)
		return o
	}
	if o := wait(50 * time.Millisecond); o != TimedOut {
		t.Fatalf("pending: %d, want TimedOut", o)
	}
	// Published while waiting.
	done := make(chan Outcome)
	go func() { done <- wait(time.Minute) }()
	src.set(func(st *vfs.Status) { st.Jobs = nil })
	if o := <-done; o != Published {
		t.Fatalf("published: %d", o)
	}
	src.set(func(st *vfs.Status) {
		st.Jobs = append(jobs(2, writeback.StatePending), jobs(1, writeback.StateFailed)...)
	})
	if o := wait(time.Minute); o != Failed {
		t.Fatalf("failed: %d", o)
	}
	src.set(func(st *vfs.Status) {
		st.Jobs, st.Online, st.LastError = jobs(1, writeback.StatePending), false, "dial tcp: refused"
	})
	if o := wait(50 * time.Millisecond); o != Unreachable {
		t.Fatalf("offline: %d", o)
	}
	// Back online while waiting, and published.
	go func() { done <- wait(time.Minute) }()
	src.set(func(st *vfs.Status) { st.Online, st.LastError = true, "" })
	src.set(func(st *vfs.Status) { st.Jobs = nil })
	if o := <-done; o != Published {
		t.Fatalf("back online: %d", o)
	}
	src.set(func(st *vfs.Status) { st.Online, st.LastError = false, "dial tcp: refused" })
	// Offline with nothing left to publish is still published.
	src.set(func(st *vfs.Status) { st.Jobs = nil })
	if o := wait(time.Minute); o != Published {
		t.Fatalf("offline, nothing pending: %d", o)
	}
	s.Close()
	c.CloseIdle()
	if o := wait(time.Minute); o != Unreachable {
		t.Fatalf("socket gone: %d", o)
	}
}
