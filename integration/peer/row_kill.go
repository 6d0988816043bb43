package main

// Row "kill -9 durability": files of distinct content written and closed
// through the mount, the mount process killed with SIGKILL at once, the
// dead mount detached, the tool mounted again with the same cache dir, and
// after it has uploaded, the files whose stored sha256 matches counted. A
// poller watches the store from the first write to the end and counts files
// ever seen there with other bytes (a partial or torn upload made visible).

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

func (b *bench) killRow() {
	ctx := context.Background()
	n, size := cfg.killFiles, cfg.killKiB<<10
	const dir = "peer/kill/"
	want := map[string][32]byte{}
	bodies := map[string][]byte{}
	for i := range n {
		p := fmt.Sprintf("%sk%02d.bin", dir, i)
		bodies[p] = randomBytes(uint64(5000+i), size)
		want[p] = sha256.Sum256(bodies[p])
	}
	r := result{what: fmt.Sprintf("kill -9 after %d closed files: intact after remount", n), unit: "files"}
	for i, t := range b.tools {
		cache := cacheDir("kill-" + t.name())
		m := t.mount("kill-"+t.name(), cache)
		check(os.MkdirAll(m.path(dir), 0o755), "mkdir in the mount")
		w := watchStore(ctx, t, dir, want)
		for p, body := range bodies {
			check(os.WriteFile(m.path(p), body, 0o644), "writing "+p)
		}
		syscall.Kill(m.p.pid(), syscall.SIGKILL)
		<-m.p.done
		unmount(m.dir)
		before := countIntact(ctx, t, want) // stored before the kill: not the remount's work

		m2 := t.mount("kill2-"+t.name(), cache)
		t.waitStored(m2, cfg.storeTimeout)
		// Give a tool that queues its leftovers late up to 30s more.
		deadline := time.Now().Add(30 * time.Second)
		for countIntact(ctx, t, want) < n && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			t.waitStored(m2, cfg.storeTimeout)
		}
		intact := countIntact(ctx, t, want)
		torn := w.stop()
		m2.close()
		r.val[i] = float64(intact)
		seen := "none seen partial"
		if torn > 0 {
			seen = fmt.Sprintf("%d seen partial", torn)
		}
		r.text[i] = fmt.Sprintf("%d/%d (%d by the remount), %s", intact, n, intact-before, seen)
	}
	switch {
	case r.val[0] > r.val[1]:
		r.ahead = "evofs"
	case r.val[1] > r.val[0]:
		r.ahead = "rclone"
	default:
		r.ahead = "tie"
	}
	b.add(r)
}

// countIntact counts the files of want the store holds with their bytes.
func countIntact(ctx context.Context, t tool, want map[string][32]byte) int {
	n := 0
	for p, sum := range want {
		if size, got, ok := t.stored(ctx, p); ok && size > 0 && got == sum {
			n++
		}
	}
	return n
}

// storeWatch polls the store under a prefix and remembers every file seen
// there with bytes other than those written.
type storeWatch struct {
	done chan struct{}
	wg   sync.WaitGroup
	torn map[string]bool
	err  any // a failure inside the poller, raised again by stop
}

func watchStore(ctx context.Context, t tool, prefix string, want map[string][32]byte) *storeWatch {
	w := &storeWatch{done: make(chan struct{}), torn: map[string]bool{}}
	checked := map[string]string{} // path -> version already compared
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.err = recover() }()
		for {
			for p, l := range t.list(ctx, prefix) {
				if checked[p] == l.version {
					continue
				}
				checked[p] = l.version
				if _, sum, ok := t.stored(ctx, p); ok && sum != want[p] {
					w.torn[p] = true
				}
			}
			select {
			case <-w.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// stop ends the watch and returns how many files were seen with wrong bytes.
func (w *storeWatch) stop() int {
	close(w.done)
	w.wg.Wait()
	if w.err != nil {
		panic(w.err)
	}
	return len(w.torn)
}
