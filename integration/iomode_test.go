package integration

import (
	"bytes"
	"io"
	"os"
	"testing"

	"evofs/remote/emulator"
)

// Every mix of readers and writers on one cached file opens and reads the
// right bytes, and every write reaches the service.
func TestMixedOpenModesOnOneFile(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	v1 := randomBytes(60, 3<<20)
	ts.PutFile(ts.Org, ts.Workspace, "mix.bin", v1)
	m := mountOn(t, ts, mountOpts{})
	p := m.path("mix.bin")

	// a cached-mode reader that stays open while the cache fills
	first, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(first)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "first reader", got, v1)
	// the version is complete in the cache now
	mustEqual(t, "second reader", readFile(t, p), v1)
	first.Close()

	// a reader, then a writer
	a, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustEqual(t, "reader", readAt(t, a, len(v1)), v1)
	w, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("writer while a reader is open: %v", err)
	}
	v2 := append([]byte("EDITED"), v1[6:]...)
	if _, err := w.WriteAt(v2[:6], 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "writer reads its own write", readAt(t, w, len(v2)), v2)
	c, err := os.Open(p)
	if err != nil {
		t.Fatalf("reader while a writer and a reader are open: %v", err)
	}
	mustEqual(t, "reader sees the local write", readAt(t, c, len(v2)), v2)
	c.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m.waitRemote("mix.bin", v2)
	a.Close()
	mustEqual(t, "after all closed", readFile(t, p), v2)
	mustEqual(t, "again", readFile(t, p), v2)

	// reader, writer, reader gone, second writer: its write is published
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	readAt(t, r, len(v2))
	w1, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w2, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.WriteAt([]byte("LASTWRITE"), 0); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	w1.Close()
	v3 := append([]byte("LASTWRITE"), v2[9:]...)
	mustEqual(t, "after the second writer", readFile(t, p), v3)
	m.waitRemote("mix.bin", v3)
}

func readAt(t *testing.T, f *os.File, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	k, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return bytes.Clone(b[:k])
}
