package meta

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSetGetReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r := Record{Version: "v1", Mtime: 1_700_000_000_123456789, Has: HasMode | HasOwner, Mode: 0o4755, UID: 7, GID: 8}
	if err := s.Set("a/b", r); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("l", Record{Kind: KindSymlink, Target: "../x"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := open(t, dir)
	if got, ok := s2.Get("a/b"); !ok || got != r {
		t.Fatalf("after reopen: %+v %v, want %+v", got, ok, r)
	}
	if got, _ := s2.Get("l"); got.Kind != KindSymlink || got.Target != "../x" {
		t.Fatalf("symlink record: %+v", got)
	}
	if st := s2.Stats(); st.Damaged != 0 || st.TornTail || st.Records != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMoveFollowsSubtreeAndReplaces(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for _, k := range []string{"d", "d/x", "d/e/y", "dd/z", "t/old"} {
		if err := s.Set(k, Record{Mtime: int64(len(k))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Move("d", "t"); err != nil {
		t.Fatal(err)
	}
	s.Set("one", Record{Mtime: 9})
	s.Set("dd/z2", Record{Mtime: 1})
	if err := s.MoveOne("one", "dd/z2"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	want := map[string]bool{"t": true, "t/x": true, "t/e/y": true, "dd/z": true, "dd/z2": true}
	got := map[string]bool{}
	s.Range(func(k string, r Record) { got[k] = true })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if r, _ := s.Get("dd/z2"); r.Mtime != 9 {
		t.Fatalf("MoveOne did not replace: %+v", r)
	}
	if r, _ := s.Get("t/e/y"); r.Mtime != int64(len("d/e/y")) {
		t.Fatalf("moved record %+v", r)
	}
}

func TestConcurrentUpdates(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				k := fmt.Sprintf("w%d/f%d", w, i%20)
				if err := s.Set(k, Record{Mtime: int64(i)}); err != nil {
					t.Error(err)
				}
				if i%7 == 0 {
					s.Delete(fmt.Sprintf("w%d/f%d", w, (i+3)%20))
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	synced := make(chan struct{})
	go func() { // fsyncs race appends and compactions
		defer close(synced)
		for {
			select {
			case <-stop:
				return
			default:
				if err := s.Sync(); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-synced
	want := map[string]Record{}
	s.Range(func(k string, r Record) { want[k] = r })
	s.Close()
	s2 := open(t, dir)
	got := map[string]Record{}
	s2.Range(func(k string, r Record) { got[k] = r })
	if len(got) != len(want) {
		t.Fatalf("%d records after reopen, want %d", len(got), len(want))
	}
	for k, r := range want {
		if got[k] != r {
			t.Fatalf("%s: %+v, want %+v", k, got[k], r)
		}
	}
}

// A crash in the middle of an append leaves a partial entry: every cut
// point of the last entry must replay to the state before it.
func TestTornTailIgnored(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Set("a", Record{Mtime: 1})
	s.Set("b", Record{Mtime: 2})
	s.Close()
	full, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	before := len(full)
	s = open(t, dir)
	s.Set("a", Record{Mtime: 3}) // the entry that will be torn
	s.Close()
	full, _ = os.ReadFile(filepath.Join(dir, logName))
	for cut := before + 1; cut < len(full); cut++ {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, logName), full[:cut], 0o600)
		s := open(t, d)
		if r, _ := s.Get("a"); r.Mtime != 1 {
			t.Fatalf("cut at %d: a=%+v, want the old record", cut, r)
		}
		if r, _ := s.Get("b"); r.Mtime != 2 {
			t.Fatalf("cut at %d: b=%+v", cut, r)
		}
		if st := s.Stats(); !st.TornTail && st.Damaged == 0 {
			t.Fatalf("cut at %d: not reported: %+v", cut, st)
		}
		// appends after a torn tail must be readable
		s.Set("c", Record{Mtime: 4})
		s.Close()
		s2 := open(t, d)
		if r, _ := s2.Get("c"); r.Mtime != 4 {
			t.Fatalf("cut at %d: append after the torn tail lost", cut)
		}
		if st := s2.Stats(); st.TornTail || st.Damaged != 0 {
			t.Fatalf("cut at %d: damage persists after rewrite: %+v", cut, st)
		}
	}
}

func TestDamagedRecordSkippedAndReported(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Set("a", Record{Mtime: 1})
	s.Set("b", Record{Mtime: 2})
	s.Set("c", Record{Mtime: 3})
	s.Close()
	p := filepath.Join(dir, logName)
	b, _ := os.ReadFile(p)
	// flip a byte in the payload of the second entry
	first := hdrLen + int(le32(b[4:]))
	b[first+hdrLen+3] ^= 0xff
	os.WriteFile(p, b, 0o600)
	s = open(t, dir)
	if st := s.Stats(); st.Damaged != 1 {
		t.Fatalf("damaged %d, want 1 (%+v)", st.Damaged, st)
	}
	if _, ok := s.Get("b"); ok {
		t.Fatal("the damaged record was used")
	}
	if r, _ := s.Get("a"); r.Mtime != 1 {
		t.Fatalf("a=%+v", r)
	}
	if r, _ := s.Get("c"); r.Mtime != 3 {
		t.Fatalf("c=%+v: replay did not resynchronise after the damage", r)
	}
	// a damaged length field as well
	s.Close()
	b, _ = os.ReadFile(p)
	b[4], b[5], b[6], b[7] = 0xff, 0xff, 0xff, 0x7f
	os.WriteFile(p, b, 0o600)
	s = open(t, dir)
	if r, _ := s.Get("c"); r.Mtime != 3 || s.Stats().Damaged != 1 {
		t.Fatalf("after a bad length: c=%+v stats %+v", r, s.Stats())
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestRetainCleansUp(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for _, k := range []string{"keep", "gone1", "gone2"} {
		s.Set(k, Record{Mtime: 1})
	}
	n, err := s.Retain(func(k string, r Record) bool { return k == "keep" })
	if err != nil || n != 2 {
		t.Fatalf("retain: %d %v", n, err)
	}
	s.Close()
	s = open(t, dir)
	if st := s.Stats(); st.Records != 1 {
		t.Fatalf("records %d after cleanup, want 1", st.Records)
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for i := 0; i < 40000; i++ {
		if err := s.Set(fmt.Sprintf("k%d", i%10), Record{Mtime: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.LogBytes > 2<<20 {
		t.Fatalf("log %d bytes for 10 records: never compacted", st.LogBytes)
	}
	s.Close()
	s = open(t, dir)
	if r, _ := s.Get("k9"); r.Mtime != 39999 {
		t.Fatalf("k9=%+v after compaction", r)
	}
	if _, err := os.Stat(filepath.Join(dir, tmpName)); !os.IsNotExist(err) {
		t.Fatalf("temp file left: %v", err)
	}
}
