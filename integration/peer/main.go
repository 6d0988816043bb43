// Command peer is `make bench-peer`: evofs and rclone mount measured side
// by side over one Microsoft Azurite (Azure Storage emulator), in one run,
// on one machine, printing one table.
//
// It starts Azurite, `evofs serve --blob-backend azurite=...` (the File
// API; every blob in Azurite) and, per row, fresh mounts of both tools:
// `evofs mount` of the workspace and `rclone mount --vfs-cache-mode full`
// of a container of the same Azurite. The File API names blobs by file id
// and version, so rclone cannot read evofs's layout as paths: each tool
// gets the same bytes where it reads them naturally (evofs: a file
// published at PATH in the workspace; rclone: the blob PATH in container
// "rclone"). Same Azurite, same bytes, same machine, same run. Both use the
// same write-back delay after close (PEER_WRITEBACK, default 0s), so "until
// stored" measures the tools rather than their timers.
//
// Rows (times are wall clock; ratio = baseline time / tool time, so >= 1
// means as fast as the baseline):
//   - cold read 512 MiB: fresh mount and cache, page cache dropped, one
//     sequential read with a 1 MiB buffer; vs curl of the same blob from
//     Azurite (the tool's own SAS URL) into /dev/null, page cache dropped.
//   - warm re-read 512 MiB: the same file again on the same mount, now in
//     the tool's disk cache, page cache dropped (so "warm" is the tool's
//     cache, not the kernel's); vs the same read of a local copy, page
//     cache dropped.
//   - cp 512 MiB until stored: copy of a local file (in the page cache) to
//     the mount, until the tool says everything is uploaded and the store
//     lists the file at its size; vs each tool's own direct upload of the
//     same file (evofs: remote.Client.Publish; rclone: rclone copyto).
//     The cell also says when the close returned.
//   - mount until ready: how long that fresh mount took to answer (evofs
//     lists the workspace when it mounts; rclone when a folder is read).
//   - ls -lR cold / warm: 5,000 files in 500 folders seeded in the store;
//     `ls -lR` on a fresh mount with the page cache dropped, then again.
//   - 500 x 4 KiB until stored: 500 files written and closed one after
//     another, until the tool has uploaded all and the store lists them.
//   - peak RSS copying 2 GiB out: VmHWM of the mount process (fresh mount)
//     after reading a 2 GiB file through it into memory that is reused.
//   - kill -9 durability: 20 files of distinct content written and closed,
//     the mount process killed with SIGKILL at once, the dead mount
//     detached, a remount with the same cache dir, then the files whose
//     stored sha256 matches are counted; a poller watches the store the
//     whole time and counts files ever seen there with other bytes
//     (partial or torn uploads).
//
// Sizes are env vars so that debugging runs small: PEER_READ_MIB (512),
// PEER_CP_MIB (512), PEER_TREE_DIRS (500), PEER_TREE_PER_DIR (10),
// PEER_SMALL (500), PEER_SMALL_KIB (4), PEER_BIG_MIB (2048),
// PEER_KILL_FILES (20), PEER_KILL_KIB (1024), PEER_WRITEBACK (0s),
// PEER_ROWS (read,cp,small,tree,rss,kill: which groups run), PEER_EVOFS
// (the evofs binary, default bin/evofs). Needs root (drop_caches), FUSE,
// azurite-blob, rclone and curl. Everything it starts (Azurite, evofs
// serve, mounts) is stopped and unmounted at the end, also on failure.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	code := run()
	cleanup()
	os.Exit(code)
}

func run() (code int) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(failure); ok {
				fmt.Fprintln(os.Stderr, "bench-peer:", sigRe.ReplaceAllString(f.err.Error(), "${1}REDACTED"))
			} else {
				fmt.Fprintf(os.Stderr, "bench-peer: panic: %v\n%s", r, debug.Stack())
			}
			code = 1
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench-peer: %v: stopping everything it started\n", s)
		cleanup()
		os.Exit(130)
	}()
	loadConfig()
	if os.Geteuid() != 0 {
		fail("run as root: the bench drops the page cache between reads")
	}
	az := startAzurite()
	ev := startEvofs(az)
	rc := newRclone(az)
	b := &bench{az: az, tools: []tool{ev, rc}}
	fmt.Printf("bench-peer: %s; %s; Azurite %s; %s\n", ev.version, rc.version, az.version, cfg)
	for _, g := range groups {
		if cfg.rows[g.name] {
			fmt.Printf("bench-peer: %s ...\n", g.name)
			g.run(b)
		}
	}
	fmt.Println()
	printHeader(ev.version, rc.version, az.version)
	printTable(os.Stdout, b.results)
	return 0
}
