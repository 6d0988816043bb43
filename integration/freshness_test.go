package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evofs/remote/emulator"
)

// Remote creates, updates, deletes and renames (delete + create) reach the
// mount through delta polls within the poll interval.
func TestDeltaPollSeesRemoteChanges(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	ts.PutFile(ts.Org, ts.Workspace, "keep.txt", []byte("keep"))
	ts.PutFile(ts.Org, ts.Workspace, "old/name.txt", []byte("moving"))
	m := mountOn(t, ts, mountOpts{pollInterval: 100 * time.Millisecond})
	mustEqual(t, "before", readFile(t, m.path("keep.txt")), []byte("keep"))

	ts.PutFile(ts.Org, ts.Workspace, "new/created.txt", []byte("created"))
	ts.PutFile(ts.Org, ts.Workspace, "keep.txt", []byte("updated"))
	ts.DeleteFile(ts.Org, ts.Workspace, "old/name.txt")
	ts.PutFile(ts.Org, ts.Workspace, "moved/name.txt", []byte("moving"))
	check := func() error {
		for p, want := range map[string]string{"keep.txt": "updated", "new/created.txt": "created", "moved/name.txt": "moving"} {
			got, err := os.ReadFile(m.path(p))
			if err != nil || string(got) != want {
				return fmt.Errorf("%s: %q %v", p, got, err)
			}
		}
		if _, err := os.Stat(m.path("old/name.txt")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("old/name.txt still there: %v", err)
		}
		if _, err := os.Stat(m.path("old")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("empty folder old still there: %v", err)
		}
		return nil
	}
	var last error
	if !eventually(t, 10*time.Second, func() bool { last = check(); return last == nil }) {
		t.Fatal(last)
	}
}

// The request budget: warm metadata and warm reads cost nothing; a poll
// with no changes costs one listing (plus one for deletions).
func TestRequestBudget(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	for i := 0; i < 300; i++ {
		ts.PutFile(ts.Org, ts.Workspace, fmt.Sprintf("d%02d/f%03d.txt", i%30, i), []byte(fmt.Sprint(i)))
	}
	data := randomBytes(50, 5<<20)
	ts.PutFile(ts.Org, ts.Workspace, "big.bin", data)
	ts.ResetRequests()
	m := mountOn(t, ts, mountOpts{})
	if n := ts.Requests(emulator.OpAny); n != 1 {
		t.Errorf("mounting 301 files made %d requests, want 1 listing", n)
	}

	walk := func() int {
		n := 0
		filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := d.Info(); err == nil {
				n++
			}
			return nil
		})
		return n
	}
	if got := walk(); got != 1+30+301 {
		t.Fatalf("walk saw %d entries", got)
	}
	ts.ResetRequests()
	walk()
	if n := ts.Requests(emulator.OpAny); n != 0 {
		t.Errorf("warm ls -lR made %d requests", n)
	}

	ts.ResetRequests()
	f, err := os.Open(m.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	f.ReadAt(buf, 0)
	f.Close()
	if n := ts.Requests(emulator.OpGetByID) + ts.Requests(emulator.OpGetByPath) + ts.Requests(emulator.OpList); n > 1 {
		t.Errorf("opening and reading a file made %d metadata requests, want <= 1", n)
	}
	mustEqual(t, "cold read", readFile(t, m.path("big.bin")), data)
	ts.ResetRequests()
	// drop the kernel's pages so the read reaches evofs and its cache
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	mustEqual(t, "warm read", readFile(t, m.path("big.bin")), data)
	if n := ts.Requests(emulator.OpAny); n != 0 {
		t.Errorf("reading a cached unchanged file made %d requests", n)
	}

	ts.ResetRequests()
	if err := m.core.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := ts.Requests(emulator.OpAny); n > 2 {
		t.Errorf("a poll with no changes made %d requests, want <= 2", n)
	}
	if !bytes.Equal(readFile(t, m.path("d00/f000.txt")), []byte("0")) {
		t.Fatal("content changed")
	}
}
