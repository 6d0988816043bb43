package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"evofs/fusefs/vfs"
)

// SocketName is the control socket's name in the cache dir.
const SocketName = "control.sock"

// StatusSource is what the server reports on (*vfs.FS).
type StatusSource interface {
	Status() vfs.Status
}

// Server serves one mount's control socket.
type Server struct {
	path string
	ln   net.Listener
	hs   *http.Server
	done chan struct{}
}

// Listen binds the control socket at path (mode 0600; a stale socket left by
// a process that died is replaced) and serves src's status until Close.
func Listen(path, mountpoint string, src StatusSource, log *logrus.Entry) (*Server, error) {
	if c, err := dialSocket(context.Background(), path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by another mount of this cache dir", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	var ln net.Listener
	err := viaShortPath(path, func(p string) error {
		var err error
		ln, err = net.Listen("unix", p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // Close unlinks the real path
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		files := r.URL.Query().Get("files") != "0"
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(NewReport(mountpoint, src.Status(), files)); err != nil {
			log.WithError(err).Debug("control: writing status")
		}
	})
	s := &Server{
		path: path, ln: &ownerOnly{UnixListener: ln.(*net.UnixListener), uid: os.Getuid(), log: log},
		hs:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Warn("control socket stopped")
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.hs.Close()
	<-s.done
	os.Remove(s.path)
	return err
}

// ownerOnly accepts only connections from uid (the socket's mode already
// keeps others out; this also holds where the mode is not enforced).
type ownerOnly struct {
	*net.UnixListener
	uid int
	log *logrus.Entry
}

func (l *ownerOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == l.uid {
			return c, nil
		}
		l.log.WithField("peer_uid", uid).WithError(err).Warn("control socket: refused a connection from another user")
		c.Close()
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

// viaShortPath calls fn with path, or, when path is too long for a unix
// socket address (108 bytes), with the same file reached through
// /proc/self/fd of its directory (cache dirs nest org and workspace ids).
func viaShortPath(path string, fn func(p string) error) error {
	if len(path) < 100 {
		return fn(path)
	}
	d, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return fn("/proc/self/fd/" + strconv.Itoa(int(d.Fd())) + "/" + filepath.Base(path))
}

func dialSocket(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := viaShortPath(path, func(p string) error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "unix", p)
		return err
	})
	return c, err
}

// ErrNotMounted means the path is not an evofs mount with a control socket.
var ErrNotMounted = errors.New("not an evofs mount")

// ErrUnreachable means the mount's process does not answer.
var ErrUnreachable = errors.New("the mount does not answer")

// Locate returns the control socket of the mount at mountpoint (from its
// root's extended attribute).
func Locate(mountpoint string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(mountpoint, vfs.XattrControl, buf)
	switch {
	case errors.Is(err, unix.ENOTCONN):
		return "", fmt.Errorf("%s: %w (the mount's process is gone; unmount it with 'fusermount3 -u %s')", mountpoint, ErrUnreachable, mountpoint)
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP):
		return "", fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
	case err != nil:
		return "", fmt.Errorf("%s: %w: %v", mountpoint, ErrNotMounted, err)
	}
	return string(buf[:n]), nil
}

// Client asks one mount's control socket.
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialSocket(ctx, path) }}
	return &Client{hc: &http.Client{Transport: tr}}
}

// Status fetches the report; withFiles includes the per-file list. A socket
// that does not answer is ErrUnreachable.
func (c *Client) Status(ctx context.Context, withFiles bool) (*Report, []byte, error) {
	u := "http://evofs/v1/status"
	if !withFiles {
		u += "?files=0"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%w: control socket answered %s", ErrUnreachable, resp.Status)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("%w: reading status: %v", ErrUnreachable, err)
	}
	var r Report
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, nil, fmt.Errorf("%w: reading status: %v", ErrUnreachable, err)
	}
	return &r, raw, nil
}

// CloseIdle releases the client's connections.
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }

// Outcome is how a wait ended; its value is `evofs status --wait`'s exit code.
type Outcome int

// Outcomes of Wait.
const (
	Published   Outcome = 0 // nothing left to publish
	Failed      Outcome = 1 // a publish failed (it waits for the file to be written again)
	TimedOut    Outcome = 2 // still publishing when ctx ended
	Unreachable Outcome = 3 // the mount does not answer, or could not reach the File API when the wait ended
)

// Wait polls the mount every interval until everything is published, a
// publish failed or ctx ends. Ending while the mount reports the File API
// unreachable is Unreachable rather than TimedOut (the mount may come back
// online during the wait, so offline alone does not end it). The report is
// the last one read (nil when none could be).
func (c *Client) Wait(ctx context.Context, interval time.Duration) (Outcome, *Report, error) {
	var last *Report
	ended := func() (Outcome, *Report, error) {
		if last != nil && !last.Online {
			return Unreachable, last, nil
		}
		return TimedOut, last, ctx.Err()
	}
	for {
		r, _, err := c.Status(ctx, false)
		switch {
		case err != nil && ctx.Err() != nil:
			return ended()
		case err != nil:
			return Unreachable, nil, err
		case r.Failed > 0:
			return Failed, r, nil
		case r.Done():
			return Published, r, nil
		}
		last = r
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ended()
		case <-t.C:
		}
	}
}
