package main

// Rows "ls -lR cold" and "warm": a tree of files in folders seeded in the
// store for both tools (not timed), then `ls -lR` of it on a fresh mount
// with the page cache dropped, and once more on the same mount. The time
// the mount took until it answered is a row too: evofs lists the whole
// workspace when it mounts, rclone lists folders when they are first read.

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sync"
)

func (b *bench) treeRows() {
	ctx := context.Background()
	total := cfg.treeDirs * cfg.treePerDir
	for _, t := range b.tools {
		seedTree(ctx, t)
	}
	what := fmt.Sprintf("ls -lR %d files in %d folders", total, cfg.treeDirs)
	cold := result{what: what + ", cold", unit: "s", higherIsBad: true}
	warm := result{what: what + ", warm", unit: "s", higherIsBad: true}
	ready := result{what: fmt.Sprintf("mount until ready, %d files stored", total), unit: "s", higherIsBad: true}
	for i, t := range b.tools {
		var m *mount
		ready.val[i] = timed(func() { m = t.mount("tree-"+t.name(), cacheDir("tree-"+t.name())) }).Seconds()
		dropCaches()
		var files int
		cold.val[i] = timed(func() { files = lsLR(m.path("tree")) }).Seconds()
		if files != total {
			fail("%s: ls -lR listed %d files, want %d", t.name(), files, total)
		}
		warm.val[i] = timed(func() { files = lsLR(m.path("tree")) }).Seconds()
		if files != total {
			fail("%s: ls -lR listed %d files the second time, want %d", t.name(), files, total)
		}
		m.close()
	}
	b.add(ready)
	b.add(cold)
	b.add(warm)
}

// seedTree stores tree/dNNN/fNN.txt (small distinct contents) for t, 16 at
// a time.
func seedTree(ctx context.Context, t tool) {
	type job struct {
		path string
		body []byte
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := t.seedSmall(ctx, j.path, j.body); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for d := range cfg.treeDirs {
		for f := range cfg.treePerDir {
			p := fmt.Sprintf("tree/d%03d/f%02d.txt", d, f)
			jobs <- job{p, []byte(fmt.Sprintf("%s: file %d of folder %d\n", p, f, d))}
		}
	}
	close(jobs)
	wg.Wait()
	check(first, t.name()+": seeding the tree")
}

// lsLR runs `ls -lR dir` and returns how many regular files it listed.
func lsLR(dir string) int {
	out, err := exec.Command("ls", "-lR", dir).Output()
	check(err, "ls -lR")
	n := 0
	for _, l := range bytes.Split(out, []byte("\n")) {
		if len(l) > 0 && l[0] == '-' {
			n++
		}
	}
	return n
}
