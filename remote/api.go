package remote

import (
	"context"
	"io"

	"github.com/google/uuid"
)

// New validates cfg, applies defaults and returns a client.
func New(cfg Config) (*Client, error) { panic("unimplemented") }

// Config returns the effective configuration (defaults applied).
func (c *Client) Config() Config { return c.cfg }

// List fetches one page of the listing.
func (c *Client) List(ctx context.Context, o ListOptions) (*ListPage, error) { panic("unimplemented") }

// ListAll pages through the whole listing (offset + count < total, never the
// links), de-duplicating rows by file_id (later pages win).
func (c *Client) ListAll(ctx context.Context, o ListOptions) ([]FileMeta, error) {
	panic("unimplemented")
}

// GetByPath returns the metadata and a download URL of the live file at path.
func (c *Client) GetByPath(ctx context.Context, path string, o GetOptions) (*FileMeta, error) {
	panic("unimplemented")
}

// GetByID returns the metadata and a download URL of a file.
func (c *Client) GetByID(ctx context.Context, id uuid.UUID, o GetOptions) (*FileMeta, error) {
	panic("unimplemented")
}

// UpsertByPath registers a new version of the file at path (creating it if
// needed). With resume set it asks for a fresh URL for that uncommitted version.
func (c *Client) UpsertByPath(ctx context.Context, path string, resume VersionID) (*UploadTicket, error) {
	panic("unimplemented")
}

// UpdateByID registers a new version of an existing file (or, with resume,
// renews the URL of an uncommitted one).
func (c *Client) UpdateByID(ctx context.Context, id uuid.UUID, resume VersionID) (*UploadTicket, error) {
	panic("unimplemented")
}

// Register calls UpdateByID when t.FileID is set, else UpsertByPath.
func (c *Client) Register(ctx context.Context, t Target, resume VersionID) (*UploadTicket, error) {
	panic("unimplemented")
}

// Restore undeletes a file. It returns nil metadata on 204 (restored in
// place) and the new metadata on 303 (restored elsewhere).
func (c *Client) Restore(ctx context.Context, id uuid.UUID) (*FileMeta, error) {
	panic("unimplemented")
}

// DeleteByPath soft-deletes the file at path. 404 and 410 count as success.
func (c *Client) DeleteByPath(ctx context.Context, path string) error { panic("unimplemented") }

// DeleteByID soft-deletes a file. 404 and 410 count as success.
func (c *Client) DeleteByID(ctx context.Context, id uuid.UUID) error { panic("unimplemented") }

// Health returns the health check status ("pass", "degraded", "fail").
func (c *Client) Health(ctx context.Context) (string, error) { panic("unimplemented") }

// Blob is a readable version's blob. It keeps the current download URL and
// renews it (GetByID with the version id) once when a transfer finds it
// expired. Safe for concurrent use.
type Blob struct {
	FileID    uuid.UUID
	VersionID VersionID
	Size      int64
	// url guarded by an internal mutex
}

// NewBlob makes a Blob from metadata that carries a download URL.
func (c *Client) NewBlob(m *FileMeta) *Blob { panic("unimplemented") }

// Download copies bytes [off, off+n) of the blob into w at the same offsets
// (w.WriteAt(p, off+i)), in parallel ranged GETs of BlockSize when n is large.
// progress (may be nil) is called with the cumulative bytes written.
func (c *Client) Download(ctx context.Context, b *Blob, w io.WriterAt, off, n int64, progress func(done int64)) error {
	panic("unimplemented")
}

// Upload sends size bytes of content to the ticket's upload URL: one Put
// Blob up to SinglePutThreshold, else parallel Put Block + Put Block List.
// On an expired URL it re-registers t (with the ticket's version id) once and
// continues. The ticket's Upload field is updated with a renewed URL.
func (c *Client) Upload(ctx context.Context, t Target, ticket *UploadTicket, content io.ReaderAt, size int64, progress func(done int64)) error {
	panic("unimplemented")
}

// WaitVisible polls GetByID with backoff (PollMin doubling to PollMax) until
// the file's latest version is v, or PollTimeout passes.
func (c *Client) WaitVisible(ctx context.Context, id uuid.UUID, v VersionID) (*FileMeta, error) {
	panic("unimplemented")
}

// PublishOptions tune one Publish.
type PublishOptions struct {
	// Resume, when set, is a ticket from an earlier, interrupted publish of the
	// same target: it is re-registered with its version id instead of asking
	// for a new version (404 falls back to a new registration; 400
	// no-file-upload-in-progress means it is already committed: go to polling).
	Resume *UploadTicket
	// OnRegistered is called once the ticket is known, before any byte is sent,
	// so a caller can journal it.
	OnRegistered func(*UploadTicket)
	// Progress is called with the cumulative bytes uploaded.
	Progress func(done int64)
}

// Publish = register → upload → poll until visible. It returns the metadata
// of the new version (with a download URL).
func (c *Client) Publish(ctx context.Context, t Target, content io.ReaderAt, size int64, o PublishOptions) (*FileMeta, error) {
	panic("unimplemented")
}

// RedactURL returns u with the sig= query value (and any token) replaced by
// "REDACTED", for logs and errors.
func RedactURL(u string) string { panic("unimplemented") }
