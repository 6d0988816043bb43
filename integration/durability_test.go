package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"evofs/fusefs/vfs"
	"evofs/remote/emulator"
)

// The service failing a fifth of all calls (errors, throttling, dropped
// connections, expired URLs) while 200 files are written: every file is
// published with exact bytes.
func TestFaultyServicePublishesEverything(t *testing.T) {
	m := mountT(t, mountOpts{pollInterval: 200 * time.Millisecond, emu: emulator.Options{PublishDelay: 5 * time.Millisecond}})
	m.ts.FailRate(emulator.OpAny, 0.05, emulator.Fault{Status: 500})
	m.ts.FailRate(emulator.OpAny, 0.05, emulator.Fault{Status: 429})
	m.ts.FailRate(emulator.OpAny, 0.05, emulator.Fault{Drop: true})
	for _, op := range []emulator.Op{emulator.OpPutBlob, emulator.OpPutBlock, emulator.OpPutBlockList, emulator.OpGetBlob} {
		m.ts.FailRate(op, 0.05, emulator.Fault{Status: 403}) // AuthenticationFailed: an expired URL
	}
	files := map[string][]byte{}
	for i := 0; i < 200; i++ {
		size := (i * 7919) % 50000
		if i%50 == 0 {
			size = 20<<20 + i // a few multi-block uploads
		}
		p := fmt.Sprintf("d%d/f%03d.bin", i%7, i)
		files[p] = randomBytes(int64(100+i), size)
		os.MkdirAll(m.path(fmt.Sprintf("d%d", i%7)), 0o755)
		writeFile(t, m.path(p), files[p])
	}
	m.drain()
	m.ts.ClearFaults()
	for p, want := range files {
		got, _, _, err := m.remoteFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		mustEqual(t, p, got, want)
	}
}

// Two mounts edit one file from the same base version: the second publish
// does not overwrite the first; it lands beside it as a conflict copy.
func TestConflictBetweenTwoMountsKeepsBoth(t *testing.T) {
	a := mountT(t, mountOpts{pollInterval: 100 * time.Millisecond})
	b := mountOn(t, a.ts, mountOpts{pollInterval: 100 * time.Millisecond})
	base := []byte("base version\n")
	writeFile(t, a.path("plan.txt"), base)
	id, _ := a.waitRemote("plan.txt", base)
	if !eventually(t, 10*time.Second, func() bool {
		got, err := os.ReadFile(b.path("plan.txt"))
		return err == nil && string(got) == string(base)
	}) {
		t.Fatal("b never saw the base version")
	}

	fa, err := os.OpenFile(a.path("plan.txt"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	aEdit := []byte("edit made on mount a\n")
	if _, err := fa.Write(aEdit); err != nil {
		t.Fatal(err)
	}
	bEdit := []byte("edit made on mount b\n")
	writeFile(t, b.path("plan.txt"), bEdit)
	b.waitRemote("plan.txt", bEdit)
	if err := fa.Close(); err != nil {
		t.Fatal(err)
	}
	a.drain()

	got, gotID, _, err := a.remoteFile("plan.txt")
	if err != nil || gotID != id {
		t.Fatalf("plan.txt: id %s err %v; want id %s", gotID, err, id)
	}
	mustEqual(t, "plan.txt keeps b's edit", got, bEdit)
	list, err := a.client.ListAll(t.Context(), listAll())
	if err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, f := range list {
		if strings.HasPrefix(f.Name, "plan (conflict ") && strings.HasSuffix(f.Name, ").txt") {
			copies = append(copies, f.FullPath())
		}
	}
	if len(copies) != 1 {
		t.Fatalf("conflict copies on the service: %v (all: %d files)", copies, len(list))
	}
	cp, _, _, err := a.remoteFile(copies[0])
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "conflict copy holds a's edit", cp, aEdit)
	// mount a ends up showing both files
	if !eventually(t, 10*time.Second, func() bool {
		got, err1 := os.ReadFile(a.path("plan.txt"))
		_, err2 := os.Stat(a.path(copies[0]))
		return err1 == nil && string(got) == string(bEdit) && err2 == nil
	}) {
		t.Fatal("mount a does not show b's version and its conflict copy")
	}
}

func TestFsyncAndSyncClosePublish(t *testing.T) {
	t.Run("fsync", func(t *testing.T) {
		m := mountT(t, mountOpts{writeBackDelay: time.Hour, emu: emulator.Options{PublishDelay: 50 * time.Millisecond}})
		f, err := os.Create(m.path("journal.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		data := randomBytes(20, 100000)
		f.Write(data)
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync: %v", err)
		}
		got, _, _, err := m.remoteFile("journal.log") // no waiting: fsync promised it
		if err != nil {
			t.Fatalf("after fsync: %v", err)
		}
		mustEqual(t, "after fsync", got, data)
	})
	t.Run("sync-close", func(t *testing.T) {
		m := mountT(t, mountOpts{syncClose: true, writeBackDelay: time.Hour, emu: emulator.Options{PublishDelay: 50 * time.Millisecond}})
		data := randomBytes(21, 300000)
		writeFile(t, m.path("result.csv"), data)
		got, _, _, err := m.remoteFile("result.csv")
		if err != nil {
			t.Fatalf("after close: %v", err)
		}
		mustEqual(t, "after close", got, data)
	})
}

func mountStatus(t testing.TB, m *testMount) vfs.Status {
	t.Helper()
	return m.core.Status()
}

// With the service unreachable, cached files stay readable and writes queue;
// everything publishes once it is back.
func TestOfflineThenOnline(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	cached := randomBytes(30, 3<<20)
	ts.PutFile(ts.Org, ts.Workspace, "cached.bin", cached)
	m := mountOn(t, ts, mountOpts{pollInterval: 50 * time.Millisecond})
	mustEqual(t, "warm up", readFile(t, m.path("cached.bin")), cached)

	ts.FailRate(emulator.OpAny, 1, emulator.Fault{Drop: true})
	if !eventually(t, 10*time.Second, func() bool { return !mountStatus(t, m).Online }) {
		t.Fatal("status never said offline")
	}
	mustEqual(t, "cached file offline", readFile(t, m.path("cached.bin")), cached)
	written := map[string][]byte{}
	for i := 0; i < 5; i++ {
		p := fmt.Sprintf("offline-%d.txt", i)
		written[p] = randomBytes(int64(31+i), 1000*(i+1))
		writeFile(t, m.path(p), written[p])
	}
	if st := mountStatus(t, m); len(st.Jobs) != len(written) {
		t.Fatalf("pending while offline: %d jobs, want %d", len(st.Jobs), len(written))
	}
	ts.ClearFaults()
	for p, d := range written {
		m.waitRemote(p, d)
	}
	if !eventually(t, 10*time.Second, func() bool { return mountStatus(t, m).Online }) {
		t.Fatal("status never said online again")
	}
}

// A mount started while the service is unreachable serves the last listing
// it saved, reads cached files, queues writes, says offline, and publishes
// every queued file on its own once the service answers again.
func TestOfflineStartCatchesUp(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	cached := randomBytes(50, 2<<20)
	ts.PutFile(ts.Org, ts.Workspace, "docs/cached.bin", cached)
	ts.PutFile(ts.Org, ts.Workspace, "docs/uncached.txt", []byte("never read"))
	cacheDir := t.TempDir()
	m := mountOn(t, ts, mountOpts{cacheDir: cacheDir, pollInterval: 50 * time.Millisecond})
	mustEqual(t, "warm up", readFile(t, m.path("docs/cached.bin")), cached)
	m.unmount()

	ts.FailRate(emulator.OpAny, 1, emulator.Fault{Drop: true})
	m = mountOn(t, ts, mountOpts{cacheDir: cacheDir, pollInterval: 50 * time.Millisecond})
	if st := mountStatus(t, m); st.Online || !strings.Contains(st.LastError, "unreachable") {
		t.Fatalf("offline start: online %v (%q)", st.Online, st.LastError)
	}
	if _, err := os.Stat(m.path("docs/uncached.txt")); err != nil {
		t.Fatalf("the saved listing lacks a file: %v", err)
	}
	mustEqual(t, "cached file offline", readFile(t, m.path("docs/cached.bin")), cached)
	written := map[string][]byte{"docs/cached.bin": randomBytes(51, 3000)}
	for i := range 5 {
		written[fmt.Sprintf("new/offline-%d.bin", i)] = randomBytes(int64(52+i), 10000*(i+1))
	}
	if err := os.MkdirAll(m.path("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, d := range written {
		writeFile(t, m.path(p), d)
	}
	if st := mountStatus(t, m); len(st.Jobs) != len(written) || st.Online {
		t.Fatalf("while offline: %d jobs, online %v; want %d queued", len(st.Jobs), st.Online, len(written))
	}
	ts.ClearFaults()
	for p, d := range written {
		m.waitRemote(p, d)
	}
	if !eventually(t, 10*time.Second, func() bool { return mountStatus(t, m).Online }) {
		t.Fatal("status never said online again")
	}
}

func TestUnmountPublishesPending(t *testing.T) {
	m := mountT(t, mountOpts{writeBackDelay: time.Hour})
	files := map[string][]byte{"a.txt": []byte("a"), "b.bin": randomBytes(40, 1<<20)}
	for p, d := range files {
		writeFile(t, m.path(p), d)
	}
	if st := mountStatus(t, m); len(st.Jobs) != 2 {
		t.Fatalf("pending before unmount: %+v", st.Jobs)
	}
	m.unmount()
	for p, d := range files {
		got, _, _, err := m.remoteFile(p)
		if err != nil {
			t.Fatalf("%s after unmount: %v", p, err)
		}
		mustEqual(t, p, got, d)
	}
}
