package vfs

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// writeVia creates-or-truncates p in dir and writes data in two pieces,
// reading it back before closing (no t.Fatal: runs on other goroutines).
func writeVia(ctx context.Context, f *FS, dir *Node, name string, data []byte) error {
	_, h, _, err := f.Create(ctx, dir, name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_TRUNC)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer h.Release()
	half := len(data) / 2
	if _, err := h.Write(ctx, data[half:], int64(half)); err != nil {
		return err
	}
	if _, err := h.Write(ctx, data[:half], 0); err != nil {
		return err
	}
	got, err := readAll(ctx, h)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%s: read-your-writes got %s want %s", name, sum(got), sum(data))
	}
	return h.Flush(ctx)
}

func readVia(ctx context.Context, f *FS, dir *Node, name string) ([]byte, error) {
	n, err := f.Lookup(dir, name)
	if err != nil {
		return nil, err
	}
	h, _, err := f.Open(ctx, n, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	return readAll(ctx, h)
}

func TestConcurrentWritersReadersAndRefresh(t *testing.T) {
	const writers, rounds, remoteFiles = 4, 6, 3
	versions := map[string][][]byte{} // remote files: every content they ever had
	seed := map[string][]byte{}
	for i := range remoteFiles {
		name := fmt.Sprintf("R%d", i)
		v := randomBytes(int64(100+i), 200_000+i)
		versions[name] = [][]byte{v}
		seed["in/"+name] = v
	}
	e := newSeeded(t, coreOpts{delay: 5 * time.Millisecond, poll: 20 * time.Millisecond}, seed)
	ctx := ctxT(t)
	in := e.mustNode("in")
	out, err := e.core.Mkdir(e.core.Root(), "out")
	if err != nil {
		t.Fatal(err)
	}
	// the remote versions that will appear, known up front so readers can check
	for i := range remoteFiles {
		name := fmt.Sprintf("R%d", i)
		for r := 1; r <= 3; r++ {
			versions[name] = append(versions[name], randomBytes(int64(1000*r+i), 150_000+r*1000+i))
		}
	}
	stop := make(chan struct{})
	var bg, wg sync.WaitGroup
	bg.Add(2)
	go func() { // refresher
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.core.Refresh(ctx); err != nil {
				t.Errorf("refresh: %v", err)
				return
			}
		}
	}()
	go func() { // another client updates the remote files
		defer bg.Done()
		for r := 1; r <= 3; r++ {
			for i := range remoteFiles {
				name := fmt.Sprintf("R%d", i)
				if _, _, err := e.ts.PutFile(e.ts.Org, e.ts.Workspace, "in/"+name, versions[name][r]); err != nil {
					t.Errorf("put: %v", err)
				}
			}
		}
	}()
	last := make([][]byte, writers)
	for w := range writers {
		wg.Add(2)
		go func() { // writer of its own file
			defer wg.Done()
			name := fmt.Sprintf("W%d", w)
			for r := range rounds {
				data := randomBytes(int64(w*100+r), 50_000+w*1000+r*333)
				if err := writeVia(ctx, e.core, out, name, data); err != nil {
					t.Errorf("writer %d round %d: %v", w, r, err)
					return
				}
				last[w] = data
			}
		}()
		go func() { // reader of the remote files and of another writer's file
			defer wg.Done()
			for r := range rounds * 2 {
				name := fmt.Sprintf("R%d", (w+r)%remoteFiles)
				got, err := readVia(ctx, e.core, in, name)
				if err != nil {
					t.Errorf("read %s: %v", name, err)
					return
				}
				ok := false
				for _, v := range versions[name] {
					ok = ok || bytes.Equal(got, v)
				}
				if !ok {
					t.Errorf("read %s: %d bytes (sha %s) match no version it ever had", name, len(got), sum(got))
				}
				other := fmt.Sprintf("W%d", (w+1)%writers)
				if _, err := readVia(ctx, e.core, out, other); err != nil && err != ErrNotExist {
					t.Errorf("read %s: %v", other, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if t.Failed() {
		return
	}
	e.drain()
	e.refresh()
	for w := range writers {
		name := fmt.Sprintf("out/W%d", w)
		e.remoteEqual(name, last[w])
		mustEqual(t, name+" local", e.readFile(name), last[w])
	}
	for i := range remoteFiles {
		name := fmt.Sprintf("in/R%d", i)
		want := versions[fmt.Sprintf("R%d", i)][3]
		e.remoteEqual(name, want)
		mustEqual(t, name+" local", e.readFile(name), want)
	}
	if got := len(e.remotePaths()); got != writers+remoteFiles {
		t.Fatalf("%d files on the service: %v", got, e.remotePaths())
	}
}
