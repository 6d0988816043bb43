package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFileName is the lock inside a cache dir: one mount owns a cache dir
// (its journal, staging files, cache and control socket) at a time.
const lockFileName = "lock"

// InUseError says that another process owns a directory.
type InUseError struct {
	What, Dir string // "cache dir", "/home/u/.cache/evofs/..."
	Holder    string // the owner's own description: "pid N, mounted at M"
}

func (e *InUseError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("%s %s is in use by another evofs process", e.What, e.Dir)
	}
	return fmt.Sprintf("%s %s is in use by evofs (%s)", e.What, e.Dir, e.Holder)
}

// lockCacheDir takes the exclusive lock of dir for a mount at mountpoint, or
// says who holds it. The lock is an flock, so a dead owner's lock is free
// again by itself; release (or exiting) lets it go.
func lockCacheDir(dir, mountpoint string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking cache dir %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &InUseError{What: "cache dir", Dir: dir, Holder: describeHolder(holder)}
		}
		return nil, fmt.Errorf("locking cache dir %s: %w", dir, err)
	}
	// Who holds it, for the next one that tries (read by describeHolder).
	note := fmt.Sprintf("pid %d\nmounted at %s\n", os.Getpid(), mountpoint)
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(note), 0)
	}
	return func() { f.Close() }, nil
}

// describeHolder turns a lock file's "pid N\nmounted at M\n" into "pid N,
// mounted at M" (empty when the file says nothing usable).
func describeHolder(b []byte) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	if pid, ok := strings.CutPrefix(parts[0], "pid "); ok {
		if _, err := strconv.Atoi(pid); err != nil {
			return ""
		}
	}
	return strings.Join(parts, ", ")
}
