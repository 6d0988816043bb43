package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// ErrNotFound is returned by the direct-access helpers when no visible live
// file exists at the path.
var ErrNotFound = errors.New("emulator: file not found")

// PutFile commits data as a new version of the file at path (creating it if
// needed), authored by OtherUser and visible at once regardless of
// PublishDelay. It bypasses HTTP and is not counted.
func (s *Server) PutFile(org, ws uuid.UUID, path string, data []byte) (uuid.UUID, string, error) {
	segs, err := splitPlainPath(path)
	if err != nil {
		return uuid.UUID{}, "", err
	}
	key := strings.ToLower(strings.Join(segs, "/"))
	s.mu.Lock()
	wsp := s.workspaceLocked(org, ws)
	f := wsp.index[key]
	if f == nil {
		f = &file{id: uuid.New(), path: wsp.displayPath(segs)}
		wsp.files[f.id] = f
		wsp.index[key] = f
	}
	v := s.newVersionLocked(f, OtherUser, s.nowLocked())
	s.mu.Unlock()

	p, sum, err := s.store.stage(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return uuid.UUID{}, "", err
	}
	joined, err := s.store.join([]part{p})
	if err != nil {
		return uuid.UUID{}, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, err := s.store.publish(joined, f.id, v.id)
	if err != nil {
		return uuid.UUID{}, "", err
	}
	if err := s.commitLocked(wsp, f, v, pub, sum, true); err != nil {
		return uuid.UUID{}, "", err
	}
	return f.id, strconv.FormatInt(v.id, 10), nil
}

// ReadFile returns the content of the latest visible version of the live
// file at path.
func (s *Server) ReadFile(org, ws uuid.UUID, path string) ([]byte, uuid.UUID, string, error) {
	segs, err := splitPlainPath(path)
	if err != nil {
		return nil, uuid.UUID{}, "", err
	}
	s.mu.Lock()
	wsp := s.workspaceLocked(org, ws)
	f := wsp.index[strings.ToLower(strings.Join(segs, "/"))]
	var v *version
	if f != nil {
		v = f.latest(s.nowLocked())
	}
	if v == nil {
		s.mu.Unlock()
		return nil, uuid.UUID{}, "", fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	blob, size, fid, vid := v.blob, v.size, f.id, v.id
	s.mu.Unlock()
	ra, c, err := s.store.open(blob)
	if err != nil {
		return nil, uuid.UUID{}, "", err
	}
	defer c.Close()
	data := make([]byte, size)
	if _, err := ra.ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && size == 0) {
		return nil, uuid.UUID{}, "", err
	}
	return data, fid, strconv.FormatInt(vid, 10), nil
}

// DeleteFile soft-deletes the live file at path as OtherUser.
func (s *Server) DeleteFile(org, ws uuid.UUID, path string) error {
	segs, err := splitPlainPath(path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(org, ws)
	f := wsp.index[strings.ToLower(strings.Join(segs, "/"))]
	if f == nil || f.latest(now) == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return s.deleteLocked(wsp, f, OtherUser, now)
}
