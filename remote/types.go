package remote

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// VersionID is a file version as the canonical decimal string of a positive
// int64. The wire format sends it as a JSON string (API >= 2.5) or, in older
// examples, as a bare JSON number that does not fit a float64; both decode
// without passing through float64. It is always encoded as a string.
type VersionID string

// UnmarshalJSON accepts "123", 123 and null.
func (v *VersionID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*v = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return v.set(s)
	}
	return v.set(string(b))
}

func (v *VersionID) set(s string) error {
	if s == "" {
		*v = ""
		return nil
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return fmt.Errorf("version_id %q is not a decimal integer", s)
		}
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		s = "0"
	}
	*v = VersionID(s)
	return nil
}

// Less orders version ids numerically (ids are canonical, so a shorter one is smaller).
func (v VersionID) Less(o VersionID) bool {
	if len(v) != len(o) {
		return len(v) < len(o)
	}
	return v < o
}

func (v VersionID) String() string { return string(v) }

// Time is a File API timestamp. Parsing accepts a 'T' or space separator, an
// optional fraction and a 'Z', ±hh:mm or no zone (UTC).
type Time struct{ time.Time }

var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
}

// ParseTime parses a File API timestamp.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(strings.Replace(s, " ", "T", 1))
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("unparseable timestamp %q", s)
}

// UnmarshalJSON parses a File API timestamp; null gives the zero time.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	p, err := ParseTime(s)
	if err != nil {
		return err
	}
	t.Time = p
	return nil
}

// MarshalJSON emits the format the service uses (microseconds, Z).
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format("2006-01-02T15:04:05.000000Z"))
}

// UserInfo identifies the user behind a change.
type UserInfo struct {
	ID    uuid.UUID `json:"id"`
	Name  *string   `json:"name"`
	Email *string   `json:"email"`
}

// FileVersion is one entry of FileMeta.Versions.
type FileVersion struct {
	VersionID VersionID `json:"version_id"`
	CreatedAt Time      `json:"created_at"`
	CreatedBy *UserInfo `json:"created_by"`
	FileID    uuid.UUID `json:"file_id"`
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	Link      string    `json:"link"`
}

// FileMeta describes one version of a file: the body of a get, and one row
// of a listing (where Download, Self and Versions are empty).
type FileMeta struct {
	Name       string        `json:"name"`
	Path       string        `json:"path"` // parent folder, "/" or "/A/B/"
	FileID     uuid.UUID     `json:"file_id"`
	VersionID  VersionID     `json:"version_id"`
	Size       int64         `json:"size"`
	ETag       string        `json:"etag"`
	CreatedAt  Time          `json:"created_at"`
	CreatedBy  *UserInfo     `json:"created_by,omitempty"`
	ModifiedAt Time          `json:"modified_at"`
	ModifiedBy *UserInfo     `json:"modified_by,omitempty"`
	DeletedAt  *Time         `json:"deleted_at,omitempty"`
	DeletedBy  *UserInfo     `json:"deleted_by,omitempty"`
	Download   string        `json:"download,omitempty"`
	Self       string        `json:"self,omitempty"`
	Versions   []FileVersion `json:"versions,omitempty"`
	Links      *struct {
		Self string `json:"self"`
	} `json:"links,omitempty"`
}

// FullPath is the file's path without a leading slash, e.g. "A/B/name.txt".
func (m *FileMeta) FullPath() string {
	dir := strings.Trim(m.Path, "/")
	if dir == "" {
		return m.Name
	}
	return dir + "/" + m.Name
}

// UploadTicket is the answer to a register call (upsert by path or update by id).
type UploadTicket struct {
	FileID    uuid.UUID `json:"file_id"`
	VersionID VersionID `json:"version_id"`
	Upload    string    `json:"upload"`
}

// PageLinks are the paging links of a listing; opaque, never used for paging.
type PageLinks struct {
	Next *string `json:"next"`
	Prev *string `json:"prev"`
	Self string  `json:"self"`
}

// ListPage is one page of a listing.
type ListPage struct {
	Files  []FileMeta `json:"files"`
	Count  int        `json:"count"`
	Total  int        `json:"total"`
	Limit  int        `json:"limit"`
	Offset int        `json:"offset"`
	Links  PageLinks  `json:"links"`
}

// TimeFilter is one `[op:]datetime` list filter. Op is "", "lt", "lte", "gt" or "gte".
type TimeFilter struct {
	Op string
	At time.Time
}

// ListOptions are the list endpoint's filters. Zero values mean "not sent".
type ListOptions struct {
	Limit      int // 0 = service default (5000)
	Offset     int
	Deleted    bool // true lists only soft-deleted files
	FileName   string
	Author     []uuid.UUID // created_by.id
	ModifiedBy []uuid.UUID
	DeletedBy  []uuid.UUID
	CreatedAt  []TimeFilter
	ModifiedAt []TimeFilter
	DeletedAt  []TimeFilter
	OrderBy    string // e.g. "desc:modified_at"
}

// GetOptions are the get endpoints' query parameters.
type GetOptions struct {
	VersionID       VersionID // "" = latest
	IncludeVersions bool
	Deleted         bool // by id only: also resolve soft-deleted files
}

// Target names the file a publish writes: by id when FileID is set (a new
// version of that file), otherwise by path (upsert).
type Target struct {
	Path   string
	FileID uuid.UUID
}

func (t Target) String() string {
	if t.FileID != uuid.Nil {
		return "id:" + t.FileID.String()
	}
	return "path:" + t.Path
}
