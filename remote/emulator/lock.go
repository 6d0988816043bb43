package emulator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// lockDataDir takes the exclusive flock of dir/lock and records who holds
// it (pid and owner), or refuses with a sentence naming the holder. A dead
// holder's flock is released by the kernel, so stale locks never block.
func lockDataDir(dir, owner string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking data dir %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(f.Name())
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking data dir %s: %w", dir, err)
		}
		holder := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", ", ")), " ")
		if holder == "" {
			return nil, fmt.Errorf("data dir %s is in use by another evofs process", dir)
		}
		return nil, fmt.Errorf("data dir %s is in use by evofs (%s)", dir, holder)
	}
	note := fmt.Sprintf("pid %d\n", os.Getpid())
	if owner != "" {
		note += owner + "\n"
	}
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(note), 0)
	}
	return f, nil
}
