package main

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestLockCacheDir: one owner at a time; the refusal names it; released
// locks are free again.
func TestLockCacheDir(t *testing.T) {
	dir := t.TempDir()
	release, err := lockCacheDir(dir, "/home/u/Evo")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockCacheDir(dir, "/elsewhere")
	var inUse *InUseError
	want := fmt.Sprintf("cache dir %s is in use by evofs (pid %d, mounted at /home/u/Evo)", dir, os.Getpid())
	if !errors.As(err, &inUse) || err.Error() != want {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	release()
	release, err = lockCacheDir(dir, "/elsewhere")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	release()
	if got := describeHolder([]byte("garbage")); got != "garbage" {
		t.Errorf("describeHolder(garbage) = %q", got)
	}
	if got := describeHolder([]byte("pid x\n")); got != "" {
		t.Errorf("describeHolder(pid x) = %q, want empty", got)
	}
}
