package main

// --daemon: the parent re-runs the same command line as a child in its own
// session, with a pipe on fd 3 ($EVOFS_READY_FD=3), and returns once the
// child reports "ready" (exit 0) or a failure (its sentence, exit 1). The
// child serves the mount until unmounted or sent SIGTERM/SIGINT, which
// unmounts, publishes what is pending (up to --shutdown-timeout) and exits.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
)

const envReadyFD = "EVOFS_READY_FD"

// runDaemonParent starts the child and waits for its first report.
func runDaemonParent(args []string, logFile string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find the evofs executable to start in the background: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd.Stdin, cmd.Stdout = devnull, devnull
	cmd.Stderr = devnull
	if logFile == "" {
		// No log file: the child's log goes where ours goes until we exit.
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("cannot start evofs in the background: %w", err)
	}
	w.Close()
	line, rerr := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, "ready"):
		if note := strings.TrimSpace(strings.TrimPrefix(line, "ready")); note != "" {
			fmt.Fprintln(os.Stderr, "evofs: "+note)
		}
		cmd.Process.Release()
		return nil
	case strings.HasPrefix(line, "error "):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(line, "error "))
	}
	werr := cmd.Wait()
	if rerr != nil && rerr != io.EOF {
		return rerr
	}
	return fmt.Errorf("the background mount stopped before it was ready (%v)", werr)
}

var (
	readyOnce sync.Once
	readyFile *os.File
)

func readyPipe() *os.File {
	readyOnce.Do(func() {
		if os.Getenv(envReadyFD) == "3" {
			readyFile = os.NewFile(3, "ready")
			os.Unsetenv(envReadyFD)
		}
	})
	return readyFile
}

// notifyReady tells a waiting parent the mount is up (note: one line shown to the user).
func notifyReady(note string) {
	if f := readyPipe(); f != nil {
		fmt.Fprintf(f, "ready %s\n", strings.ReplaceAll(note, "\n", " "))
		f.Close()
		readyFile = nil
	}
}

// notifyFailed tells a waiting parent why the mount failed.
func notifyFailed(err error) {
	if f := readyPipe(); f != nil {
		fmt.Fprintf(f, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		f.Close()
		readyFile = nil
	}
}

// mountLogger is the mount's logger: stderr, or --log-file (appended, 0600).
func mountLogger(mf *mountFlags) (*logrus.Entry, func(), error) {
	log, err := newLogger(mf.logLevel)
	if err != nil {
		return nil, nil, err
	}
	if mf.logFile == "" {
		return log, func() {}, nil
	}
	f, err := os.OpenFile(mf.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open the log file: %w", err)
	}
	log.Logger.SetOutput(f)
	return log, func() { f.Close() }, nil
}

// quietUntilReady returns a logger like log that logs nothing until loud is
// called, then at log's level.
func quietUntilReady(log *logrus.Entry) (quiet *logrus.Entry, loud func()) {
	l := logrus.New()
	l.SetOutput(log.Logger.Out)
	l.SetFormatter(log.Logger.Formatter)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l), func() { l.SetLevel(log.Logger.GetLevel()) }
}
