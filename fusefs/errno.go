package fusefs

import (
	"context"
	"errors"
	"os"
	"syscall"

	"evofs/remote"
)

// errno maps a core error to the errno the kernel sees, and logs the
// operation and cause once. go-fuse's own ToErrno does not unwrap wrapped
// errors (it answers ENOSYS), so every error is classified here with
// errors.Is/As, defaulting to EIO.
func (m *mount) errno(op, path string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	e := classify(err)
	log := m.log.WithField("op", op).WithField("path", path).WithError(err)
	switch e {
	case syscall.ENOENT, syscall.EEXIST, syscall.ENOTEMPTY, syscall.ENODATA, syscall.EINTR, syscall.EXDEV, syscall.EROFS:
		log.Debug("fuse op refused")
	default:
		log.Warnf("fuse op failed: %v", e)
	}
	return e
}

func classify(err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		return en
	case errors.Is(err, remote.ErrNameTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, remote.ErrInvalidPath), errors.Is(err, remote.ErrValidation):
		return syscall.EINVAL
	case errors.Is(err, remote.ErrNotFound), errors.Is(err, remote.ErrGone), errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, remote.ErrForbidden), errors.Is(err, remote.ErrUnauthorized):
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, os.ErrExist):
		return syscall.EEXIST
	}
	return syscall.EIO
}
