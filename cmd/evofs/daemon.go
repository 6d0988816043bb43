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
	"gopkg.in/natefinch/lumberjack.v2"
)

const envReadyFD = "EVOFS_READY_FD"

// runDaemonParent starts the child and waits for its first report.
func runDaemonParent(args []string) error {
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
	// The child never keeps the caller's stderr (`$(evofs mount --daemon)`
	// would wait for it to close): without --log-file it logs to
	// evofs.log in its cache dir and says so when ready.
	cmd.Stderr = devnull
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

// mountLog is the mount's log output: stderr, or --log-file rotated by
// lumberjack. Its writer never changes identity, so loggers derived from
// it follow a later switch (a --daemon child learns its default log file,
// in the cache dir, only once the workspace is resolved).
type mountLog struct {
	mu   sync.Mutex
	w    io.Writer // nil: buffer until useFile
	buf  []byte    // lines logged before there was somewhere to write
	file *lumberjack.Logger
}

func (m *mountLog) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.w == nil {
		if len(m.buf) < 1<<20 {
			m.buf = append(m.buf, p...)
		}
		return len(p), nil
	}
	m.w.Write(p) // a failed log write is dropped (see dropFailedWrites)
	return len(p), nil
}

// useFile sends the log (and what was buffered) to a rotated file.
func (m *mountLog) useFile(path string, maxSize byteSize, maxBackups int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.file = &lumberjack.Logger{Filename: path, MaxSize: max(1, int(int64(maxSize)>>20)), MaxBackups: maxBackups}
	m.w = m.file
	if len(m.buf) > 0 {
		m.w.Write(m.buf)
		m.buf = nil
	}
}

// reopen closes the log file; the next line opens the path again (after
// logrotate moved it away and sent SIGHUP).
func (m *mountLog) reopen() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.file != nil {
		m.file.Close()
	}
}

func (m *mountLog) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.file != nil {
		m.file.Close()
	} else if m.w == nil && len(m.buf) > 0 {
		os.Stderr.Write(m.buf) // never reached a file: better on stderr than lost
	}
}

// mountLogger is the mount's logger (see mountLog). A --daemon child
// without --log-file buffers until defaultLogFile is known.
func mountLogger(mf *mountFlags) (*logrus.Entry, *mountLog, error) {
	log, err := newLogger(mf.logLevel)
	if err != nil {
		return nil, nil, err
	}
	switch mf.logFormat {
	case "text":
	case "json":
		log.Logger.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, nil, usageErr(fmt.Errorf("--log-format %q: want text or json", mf.logFormat))
	}
	out := &mountLog{}
	switch {
	case mf.logFile != "":
		f, err := os.OpenFile(mf.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot open the log file: %w", err)
		}
		f.Close()
		out.useFile(mf.logFile, mf.logFileMaxSize, mf.logFileMaxBackups)
	case readyPipe() == nil:
		out.w = dropFailedWrites{os.Stderr}
	}
	log.Logger.SetOutput(out)
	return log, out, nil
}

// defaultLogFile is where a --daemon mount without --log-file logs.
const defaultLogFile = "evofs.log"

// quietUntilReady returns a logger like log that logs nothing until loud is
// called, then at log's level.
func quietUntilReady(log *logrus.Entry) (quiet *logrus.Entry, loud func()) {
	l := logrus.New()
	l.SetOutput(log.Logger.Out)
	l.SetFormatter(log.Logger.Formatter)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l), func() { l.SetLevel(log.Logger.GetLevel()) }
}
