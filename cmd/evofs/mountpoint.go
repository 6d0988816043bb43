package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"evofs/fusefs"
)

// checkMountpoint refuses, before anything is mounted, a mountpoint that
// does not exist, is not a directory, is already a mount (a live one or one
// left dead by a killed process), or holds files that the mount would hide
// (unless allowNonEmpty). It returns the absolute path.
func checkMountpoint(mp string, allowNonEmpty bool) (string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", err
	}
	dead := fmt.Errorf("mountpoint %s is a dead mount (its evofs was killed): run 'fusermount3 -u %s' (or 'umount %s' as root) first", abs, abs, abs)
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return "", dead
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mountpoint %s does not exist (create it with 'mkdir -p %s')", abs, abs)
	case err != nil:
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if isMountPoint(abs) {
		// The kernel may still answer stat from its cache; open asks the
		// (gone) server.
		if d, err := os.Open(abs); errors.Is(err, syscall.ENOTCONN) {
			return "", dead
		} else if err == nil {
			d.Close()
		}
		return "", fmt.Errorf("mountpoint %s is already a mount (unmount it first, or choose another folder)", abs)
	}
	if !allowNonEmpty {
		d, err := os.Open(abs)
		if err != nil {
			return "", fmt.Errorf("mountpoint %s: %w", abs, err)
		}
		names, err := d.Readdirnames(1)
		d.Close()
		if len(names) > 0 {
			return "", fmt.Errorf("mountpoint %s is not empty: the mount would hide its files (pass --allow-non-empty to mount over them anyway)", abs)
		}
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("mountpoint %s: %w", abs, err)
		}
	}
	return abs, nil
}

// isMountPoint reports whether dir (absolute, symlinks resolved) is a mount
// point in this mount namespace.
func isMountPoint(dir string) bool {
	_, ok := fusefs.MountedAt(dir)
	return ok
}

// explainMountFailure says in one sentence why the kernel mount failed when
// the cause is this machine's FUSE setup (not the folder).
func explainMountFailure(mountErr error) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("cannot mount: this machine has no /dev/fuse (load the fuse module, or run the container with --device /dev/fuse): %w", mountErr)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err2 := exec.LookPath("fusermount"); err2 != nil {
				return fmt.Errorf("cannot mount: fusermount3 is not installed (install the fuse3 package; non-root mounts need it): %w", mountErr)
			}
		}
		f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("cannot mount: this user cannot open /dev/fuse (%v); give it read/write access (usually the fuse group, or a udev rule), see the README: %w", err, mountErr)
		}
		f.Close()
	}
	return mountErr
}

// cleanupFailedMount removes a kernel mount that a failed start left on
// mountpoint, so that no failure path leaves a dead mount behind.
func cleanupFailedMount(mountpoint string, log *logrus.Entry) {
	if !isMountPoint(mountpoint) {
		return
	}
	if err := forceUnmount(mountpoint); err != nil {
		log.WithError(err).Warnf("could not remove the failed mount; run 'fusermount3 -u %s'", mountpoint)
	}
}

// forceUnmount detaches mountpoint lazily: as root with umount2, else with
// fusermount3 -u -z (or fusermount).
func forceUnmount(mountpoint string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(mountpoint, syscall.MNT_DETACH)
	}
	for _, prog := range []string{"fusermount3", "fusermount"} {
		if path, err := exec.LookPath(prog); err == nil {
			if out, err := exec.Command(path, "-u", "-z", mountpoint).CombinedOutput(); err != nil {
				return fmt.Errorf("%s -u -z: %v: %s", prog, err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return errors.New("no fusermount3 to unmount with")
}
