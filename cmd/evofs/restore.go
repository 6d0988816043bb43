package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"evofs/fusefs/vfs"
)

// restoreCommand puts a deleted file (or folder) back at its old path. It is
// the rename a user would type, `mv MNT/.evofs/trash/PATH MNT/PATH`, done
// through the mount: no socket, no second way to restore.
func restoreCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "restore MOUNTPOINT PATH",
		Short: "Restore a deleted file or folder of a mount to where it was",
		Long: `Restore a deleted file or folder (as listed in MOUNTPOINT/.evofs/trash) to its old
path, with its history. The path must be free: a file there now is never replaced.`,
		Args: exactArgs(2, "MOUNTPOINT and PATH"),
		RunE: func(_ *cobra.Command, args []string) error {
			return restore(args[0], args[1])
		},
	}
}

// controlDir finds the mount's control folder: .evofs, or .evofs-history
// when the workspace has its own .evofs.
func controlDir(mnt string) (string, error) {
	buf := make([]byte, 64)
	for _, name := range []string{vfs.ControlName, vfs.ControlAltName} {
		p := filepath.Join(mnt, name)
		if n, err := unix.Getxattr(p, vfs.XattrView, buf); err == nil && string(buf[:n]) == "control" {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not an evofs mount (no %s folder)", mnt, vfs.ControlName)
}

func restore(mnt, p string) error {
	ctl, err := controlDir(mnt)
	if err != nil {
		return err
	}
	rel := strings.Trim(filepath.ToSlash(filepath.Clean("/"+p)), "/")
	if rel == "" {
		return usageErr(errors.New("restore needs the PATH of a deleted file or folder"))
	}
	src := filepath.Join(ctl, "trash", filepath.FromSlash(rel))
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("%s is not in the trash of %s", rel, mnt)
	}
	// An older deleted file of a path ("x (deleted ...).csv") goes back to that path.
	buf := make([]byte, 4096)
	if n, err := unix.Getxattr(src, vfs.XattrPath, buf); err == nil && n > 0 {
		rel = string(buf[:n])
	}
	dst := filepath.Join(mnt, filepath.FromSlash(rel))
	// The folder it goes back to may be gone with it: make it (a local
	// folder until the file lands in it), and remove what we made on failure.
	var made []string
	for d := filepath.Dir(dst); d != filepath.Clean(mnt); d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := os.Mkdir(made[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("making the folder %s: %w", made[i], err)
		}
	}
	err = os.Rename(src, dst)
	if err == nil {
		fmt.Printf("restored %s\n", rel)
		return nil
	}
	for _, d := range made {
		os.Remove(d)
	}
	switch {
	case errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.ENOTEMPTY):
		return fmt.Errorf("cannot restore %s: another file now lives at that path; move it away first (nothing was changed)", rel)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("cannot restore %s: the mount is read-only", rel)
	}
	return fmt.Errorf("cannot restore %s: %w", rel, err)
}
