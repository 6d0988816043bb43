package writeback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
	"evofs/remote/emulator"
)

// The journal and worker path skip syncs whose loss a restart tolerates
// (journal.go). These tests kill a process running a queue with SIGKILL at
// points of that path, restart a queue on its journal and check that every
// closed file (Enqueue returned) is published exactly once (one version of
// ours per file, bytes checked by sha256) and that no conflict copy appears;
// and they replay a power cut by putting the journal back as it was at its
// last commit.

// crashChildEnv carries a crashChild as JSON to the child process.
const crashChildEnv = "EVOFS_WRITEBACK_CRASH_CHILD"

type crashChild struct {
	URL, Token       string
	Org, Workspace   uuid.UUID
	Dir              string
	Jobs             []Job
	Point            string // crash point
	At               int    // kill at this hit of Point
	Transfers, Split int    // Split: goroutines enqueueing
}

// TestCrashChild is the child process of TestCrashRestartPublishesOnce; it
// does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	raw := os.Getenv(crashChildEnv)
	if raw == "" {
		t.Skip("child process of TestCrashRestartPublishesOnce")
	}
	var c crashChild
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	crashHook = func(p string) {
		if p == c.Point && hits.Add(1) == int64(c.At) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	cl, err := remote.New(remote.Config{
		BaseURL: c.URL, Org: c.Org, Workspace: c.Workspace, Tokens: remote.StaticToken(c.Token),
		PollMin: 5 * time.Millisecond, PollMax: 50 * time.Millisecond,
		Retry: remote.RetryPolicy{MaxAttempts: 2, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	q, err := New(Config{Dir: c.Dir, Transfers: c.Transfers, RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond}, cl)
	if err != nil {
		t.Fatal(err)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := range c.Split {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(c.Jobs); i += c.Split {
				if err := q.Enqueue(c.Jobs[i]); err != nil {
					t.Error(err)
					return
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "\nCLOSED %s\n", c.Jobs[i].Key) // unbuffered: survives the kill
				out.Unlock()
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := q.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	q.Close()
}

// crashCase is a set of files, half new and half new versions of files
// already on the service, staged in e.
type crashCase struct {
	e      *env
	jobs   []Job
	bodies map[string][]byte // by key
	seeded map[string][]byte // by key: the version the update started from
}

func newCrashCase(t *testing.T, files int) *crashCase {
	e := newEnv(t, emulator.Options{}, nil)
	c := &crashCase{e: e, bodies: map[string][]byte{}, seeded: map[string][]byte{}}
	ctx := ctxT(t, time.Minute)
	for i := range files {
		key := fmt.Sprintf("k%02d", i)
		j := Job{Key: key, Path: fmt.Sprintf("crash/new%02d.bin", i)}
		if i%2 == 1 {
			j.Path = fmt.Sprintf("crash/upd%02d.bin", i)
			seed := randBytes(3000 + i)
			m, err := e.cl.Publish(ctx, remote.Target{Path: j.Path}, bytes.NewReader(seed), int64(len(seed)), remote.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			j.FileID, j.BaseVersion = m.FileID, m.VersionID
			c.seeded[key] = seed
		}
		body := randBytes(1000 + 37*i) // small: the bytes travel in the record
		if i%3 == 2 {
			body = randBytes(InlineMax + 1000 + i) // too big for that
		}
		j.Staging = e.stage(body)
		c.bodies[key] = body
		c.jobs = append(c.jobs, j)
	}
	return c
}

// check drains a queue restarted on the journal, then checks the service:
// each closed file published once, others at most once, no conflict copies,
// an empty journal.
func (c *crashCase) check(t *testing.T, closed map[string]bool) {
	t.Helper()
	e := c.e
	q := e.open(e.config())
	if err := q.Drain(ctxT(t, time.Minute)); err != nil {
		t.Fatalf("drain after restart: %v", err)
	}
	q.Close()
	ctx := ctxT(t, time.Minute)
	all, err := e.cl.ListAll(ctx, remote.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, j := range c.jobs {
		paths[j.Path] = true
	}
	for _, m := range all {
		if !paths[m.FullPath()] {
			t.Errorf("unexpected file on the service: %s", m.FullPath())
		}
	}
	for _, j := range c.jobs {
		m, err := e.cl.GetByPath(ctx, j.Path, remote.GetOptions{IncludeVersions: true})
		seed, update := c.seeded[j.Key]
		switch {
		case errors.Is(err, remote.ErrNotFound) && !update && !closed[j.Key]:
			continue // never closed, never published: fine
		case err != nil:
			t.Errorf("%s (closed %v): %v", j.Path, closed[j.Key], err)
			continue
		}
		data, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, j.Path)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		want, base := 1, 0
		if update {
			want, base = 2, 1
		}
		switch {
		case got == sha256.Sum256(c.bodies[j.Key]):
			if len(m.Versions) != want {
				t.Errorf("%s: %d versions, want %d (published once)", j.Path, len(m.Versions), want)
			}
		case closed[j.Key]:
			t.Errorf("%s: closed but its bytes are not published (%d bytes, %d versions)", j.Path, len(data), len(m.Versions))
		case update && got == sha256.Sum256(seed) && len(m.Versions) == base:
			// not closed, not published
		default:
			t.Errorf("%s: unexpected content (%d bytes, %d versions)", j.Path, len(data), len(m.Versions))
		}
	}
	if recs := e.records(); len(recs) > 0 {
		t.Errorf("journal not empty after drain: %v", recs)
	}
}

func TestCrashRestartPublishesOnce(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		point string
		at    int
	}{
		{"enqueue-renamed", 5}, // record in place, not yet committed: the close has not returned
		{"enqueued", 7},        // committed, Enqueue about to return
		{"registered", 3},      // ticket journaled, nothing uploaded
		{"uploaded", 4},        // committed on the service, published state not journaled
		{"published", 4},       // published state written (not synced)
		{"discarded", 6},       // record removed (not committed), staging removed
	} {
		t.Run(tc.point, func(t *testing.T) {
			c := newCrashCase(t, 12)
			e := c.e
			arg, err := json.Marshal(crashChild{
				URL: e.ts.URL, Token: e.ts.Token, Org: e.ts.Org, Workspace: e.ts.Workspace,
				Dir: e.dir, Jobs: c.jobs, Point: tc.point, At: tc.at, Transfers: 4, Split: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 2*time.Minute)
			cmd := exec.CommandContext(ctx, exe, "-test.run", "^TestCrashChild$", "-test.count", "1", "-test.v")
			cmd.Env = append(os.Environ(), crashChildEnv+"="+string(arg))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err = cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s #%d: %v\n%s", tc.point, tc.at, err, out.String())
			}
			closed := map[string]bool{}
			for _, line := range strings.Split(out.String(), "\n") {
				if k, ok := strings.CutPrefix(line, "CLOSED "); ok {
					closed[k] = true
				}
			}
			c.check(t, closed)
		})
	}
}

// A power cut loses what the journal did not commit: the finished job's
// record removal and its published state (never synced), while the staging
// file's removal may stick. Replaying that (the journal put back as it was
// when the ticket was committed, the staging file gone or not), a restart
// publishes nothing again, makes no conflict copy and fails nothing.
func TestPowerCutAfterPublishIsHarmless(t *testing.T) {
	for _, keepStaging := range []bool{false, true} {
		t.Run(fmt.Sprintf("staging-kept=%v", keepStaging), func(t *testing.T) {
			c := newCrashCase(t, 6)
			e := c.e
			snaps := map[string]map[string][]byte{} // key → journal at its ticket's commit
			var mu sync.Mutex
			crashHook = func(p string) {
				if p != "registered" {
					return
				}
				mu.Lock() // one snapshot at a time, numbered in the order taken
				defer mu.Unlock()
				snap := map[string][]byte{}
				ents, _ := os.ReadDir(e.dir)
				for _, d := range ents {
					if b, err := os.ReadFile(filepath.Join(e.dir, d.Name())); err == nil && !strings.HasPrefix(d.Name(), tempPrefix) {
						snap[d.Name()] = b
					}
				}
				snaps[fmt.Sprint(len(snaps))] = snap
			}
			t.Cleanup(func() { crashHook = nil })
			staged := map[string][]byte{}
			for _, j := range c.jobs {
				staged[j.Staging], _ = os.ReadFile(j.Staging)
			}
			q := e.open(e.config())
			for _, j := range c.jobs {
				if err := q.Enqueue(j); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Drain(ctxT(t, time.Minute)); err != nil {
				t.Fatal(err)
			}
			q.Close()
			crashHook = nil
			// The journal as its commits left it: each job's newest record
			// taken at a commit is its ticket (union of the snapshots,
			// later ones win).
			restored := map[string][]byte{}
			for i := range len(snaps) {
				for name, b := range snaps[fmt.Sprint(i)] {
					restored[name] = b
				}
			}
			if len(restored) != len(c.jobs) {
				t.Fatalf("snapshots hold %d records, want %d", len(restored), len(c.jobs))
			}
			for name, b := range restored {
				if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if keepStaging {
				for p, b := range staged {
					if err := os.WriteFile(p, b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			closed := map[string]bool{}
			for _, j := range c.jobs {
				closed[j.Key] = true
			}
			c.check(t, closed)
		})
	}
}

// Callers that change the journal while a directory sync runs share the next
// one: one sync in flight plus n waiting callers take two syncs, not n+1, and
// none of the waiters is served by the sync that started before it came.
func TestGroupCommitSharesDirectorySyncs(t *testing.T) {
	dir := t.TempDir()
	c := newCommitter(dir)
	started := make(chan int, 10)
	release := make(chan struct{})
	var n atomic.Int64
	c.syncFn = func(d string) error {
		started <- int(n.Add(1))
		<-release
		return syncDir(d)
	}
	first := make(chan error, 1)
	go func() { first <- c.commit() }()
	if got := <-started; got != 1 {
		t.Fatalf("sync #%d started first", got)
	}
	const waiters = 16
	done := make(chan error, waiters)
	for range waiters {
		go func() { done <- c.commit() }()
	}
	eventually(t, "callers waiting for the running sync", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.waiting == waiters
	})
	select {
	case err := <-done:
		t.Fatalf("a caller returned before any sync after it started (%v)", err)
	default:
	}
	release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := <-started; got != 2 {
		t.Fatalf("sync #%d started second", got)
	}
	select {
	case err := <-done:
		t.Fatalf("a caller was served by the sync that started before it (%v)", err)
	default:
	}
	close(release)
	for range waiters {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.syncs != 2 {
		t.Fatalf("%d directory syncs for 1 + %d callers, want 2", c.syncs, waiters)
	}
}

// A small file's staging file is never synced: its bytes are in its
// journal record. A power cut after Enqueue returned may lose, empty or
// garble it; the restart restores it from the record and publishes the
// closed bytes, once. (Files over InlineMax keep a synced staging file.)
func TestPowerCutLosesUnsyncedSmallStagingFiles(t *testing.T) {
	c := newCrashCase(t, 9)
	e := c.e
	cfg := e.config()
	cfg.Delay = time.Hour // nothing publishes before the "power cut"
	q := e.open(cfg)
	closed := map[string]bool{}
	for _, j := range c.jobs {
		if err := q.Enqueue(j); err != nil {
			t.Fatal(err)
		}
		closed[j.Key] = true
	}
	q.Close()
	small := 0
	for i, j := range c.jobs {
		if len(c.bodies[j.Key]) > InlineMax {
			continue
		}
		var err error
		switch small % 3 {
		case 0:
			err = os.Remove(j.Staging)
		case 1:
			err = os.Truncate(j.Staging, 0)
		case 2:
			err = os.WriteFile(j.Staging, make([]byte, len(c.bodies[j.Key])), 0o600)
		}
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		small++
	}
	if small < 3 {
		t.Fatalf("only %d small files", small)
	}
	// check restarts a queue on the journal, drains it and checks the
	// service: every closed file's bytes, published once.
	c.check(t, closed)
}

// A record cut short by a crash (its Enqueue never returned) is removed,
// one damaged in full is set aside; the other jobs publish.
func TestTornRecordIsSetAside(t *testing.T) {
	for _, cut := range []bool{true, false} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) { testTornRecord(t, cut) })
	}
}

func testTornRecord(t *testing.T, cut bool) {
	c := newCrashCase(t, 2)
	e := c.e
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)
	for _, j := range c.jobs {
		if err := q.Enqueue(j); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	recs := e.records()
	if len(recs) != 2 {
		t.Fatalf("records %v", recs)
	}
	torn := filepath.Join(e.dir, recs[0])
	b, err := os.ReadFile(torn)
	if err != nil {
		t.Fatal(err)
	}
	damaged := b[:len(b)/2] // cut short
	if !cut {
		damaged = bytes.Clone(b)
		damaged[len(b)/2] = 0 // garbage inside, full length
	}
	if err := os.WriteFile(torn, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	q = e.open(e.config())
	if err := q.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	published := 0
	for _, j := range c.jobs {
		data, _, _, err := e.ts.ReadFile(e.ts.Org, e.ts.Workspace, j.Path)
		if err == nil && bytes.Equal(data, c.bodies[j.Key]) {
			published++
		}
	}
	if published != 1 {
		t.Errorf("%d files published, want 1 (the other's record is torn)", published)
	}
	switch {
	case cut && (exists(torn) || exists(torn+".corrupt")):
		t.Error("a record cut short was not removed")
	case !cut && !exists(torn+".corrupt"):
		t.Error("a damaged record was not set aside as .corrupt")
	}
}

// Take (the file is written again) syncs the staging file and rewrites the
// record without its bytes: a crash then publishes the file as it was left,
// not the bytes of the close before.
func TestTakeDropsInlineBytes(t *testing.T) {
	e := newEnv(t, emulator.Options{}, nil)
	cfg := e.config()
	cfg.Delay = time.Hour
	q := e.open(cfg)
	stg := e.stage([]byte("first close"))
	if err := q.Enqueue(Job{Key: "k", Path: "taken.txt", Staging: stg}); err != nil {
		t.Fatal(err)
	}
	inlineIn := func() bool {
		recs := e.records()
		if len(recs) != 1 {
			t.Fatalf("records %v", recs)
		}
		b, err := os.ReadFile(filepath.Join(e.dir, recs[0]))
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(b, []byte(`"inline"`))
	}
	if !inlineIn() {
		t.Fatal("a small file's record does not carry its bytes")
	}
	if _, ok := q.Take("k"); !ok {
		t.Fatal("Take refused")
	}
	if inlineIn() {
		t.Fatal("the record still carries the bytes after Take")
	}
	if err := os.WriteFile(stg, []byte("being written again"), 0o600); err != nil {
		t.Fatal(err)
	}
	q.Close() // a crash while the file is open again
	q = e.open(e.config())
	if err := q.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	e.expectFile("taken.txt", []byte("being written again"))
}
