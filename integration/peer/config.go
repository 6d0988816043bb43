package main

// The bench's sizes and switches, from environment variables (see main.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type config struct {
	evofs                   string
	tmp                     string
	readMiB, cpMiB, bigMiB  int
	treeDirs, treePerDir    int
	small, smallKiB         int
	killFiles, killKiB      int
	writeBack               time.Duration
	rows                    map[string]bool
	storeTimeout, mountWait time.Duration
}

var cfg config

func envInt(name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		fail("%s=%q: want a positive integer", name, v)
	}
	return n
}

func loadConfig() {
	cfg = config{
		evofs:   os.Getenv("PEER_EVOFS"),
		readMiB: envInt("PEER_READ_MIB", 512), cpMiB: envInt("PEER_CP_MIB", 512), bigMiB: envInt("PEER_BIG_MIB", 2048),
		treeDirs: envInt("PEER_TREE_DIRS", 500), treePerDir: envInt("PEER_TREE_PER_DIR", 10),
		small: envInt("PEER_SMALL", 500), smallKiB: envInt("PEER_SMALL_KIB", 4),
		killFiles: envInt("PEER_KILL_FILES", 20), killKiB: envInt("PEER_KILL_KIB", 1024),
		storeTimeout: 10 * time.Minute, mountWait: time.Minute,
	}
	if cfg.evofs == "" {
		cfg.evofs = "bin/evofs"
	}
	abs, err := filepath.Abs(cfg.evofs)
	check(err, "PEER_EVOFS")
	if _, err := os.Stat(abs); err != nil {
		fail("no evofs binary at %s (make build, or set PEER_EVOFS)", abs)
	}
	cfg.evofs = abs
	wb := os.Getenv("PEER_WRITEBACK")
	if wb == "" {
		wb = "0s"
	}
	cfg.writeBack, err = time.ParseDuration(wb)
	if err != nil || cfg.writeBack < 0 {
		fail("PEER_WRITEBACK=%q: want a duration such as 0s or 2s", wb)
	}
	cfg.rows = map[string]bool{}
	sel := os.Getenv("PEER_ROWS")
	for _, g := range groups {
		cfg.rows[g.name] = sel == ""
	}
	for _, r := range strings.Split(sel, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, ok := cfg.rows[r]; !ok {
			fail("PEER_ROWS: unknown group %q", r)
		}
		cfg.rows[r] = true
	}
	cfg.tmp, err = os.MkdirTemp("", "bench-peer-")
	check(err, "temp dir")
	tmp := cfg.tmp
	// First registered: runs last, after every unmount. PEER_KEEP=1 keeps
	// it (logs and caches) for a look after a failure.
	atCleanup(func() {
		if os.Getenv("PEER_KEEP") == "1" {
			fmt.Fprintf(os.Stderr, "bench-peer: kept %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	})
}

func (c config) String() string {
	return fmt.Sprintf("reads %d MiB, cp %d MiB, tree %dx%d, small %dx%d KiB, big %d MiB, kill %dx%d KiB, write-back %v",
		c.readMiB, c.cpMiB, c.treeDirs, c.treePerDir, c.small, c.smallKiB, c.bigMiB, c.killFiles, c.killKiB, c.writeBack)
}

// transfers is the parallel uploads of both tools (rclone's default; evofs's
// --transfers defaults to 8), so "until stored" compares the same width.
const transfers = "4"
