package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// Stager stages blocks of one registered, not yet committed version ahead
// of its Publish (streaming publish: blocks are sent while the file is still
// being written). Blocks are named and sized as Upload names and sizes them
// (BlockID(off), BlockSize bytes each, the last one shorter), so a Publish
// that resumes the version with the staged ids in PublishOptions.Acked (and
// BlockSize as AckedBlockSize) sends only the rest, commits the list and
// polls. A version that is never committed is never visible.
//
// Each time a Stage finds the upload URL expired, the version is registered
// again (same version id) for a fresh URL, which later Stages use too: a
// stream may outlive many URLs. Safe for concurrent use.
type Stager struct {
	c  *Client
	t  Target
	vi VersionID

	mu  sync.Mutex
	url string            // guarded by mu
	bb  *blockblob.Client // guarded by mu
}

// NewStager returns a Stager for ticket, registered at t.
func (c *Client) NewStager(t Target, ticket *UploadTicket) (*Stager, error) {
	if ticket == nil || ticket.Upload == "" {
		return nil, errors.New("stage: ticket without an upload URL")
	}
	bb, err := c.newBlobClient(ticket.Upload)
	if err != nil {
		return nil, err
	}
	return &Stager{c: c, t: t, vi: ticket.VersionID, url: ticket.Upload, bb: bb}, nil
}

// BlockSize is the size of the blocks Stage sends (all but a file's last).
func (s *Stager) BlockSize() int64 { return s.c.cfg.BlockSize }

// Stage sends bytes [off, off+n) of content as the block starting at off and
// returns its id. off must be a multiple of BlockSize and n at most
// BlockSize (less only for the last block of the file).
func (s *Stager) Stage(ctx context.Context, content io.ReaderAt, off, n int64) (string, error) {
	bs := s.c.cfg.BlockSize
	if off < 0 || off%bs != 0 || n <= 0 || n > bs {
		return "", fmt.Errorf("stage: block [%d, +%d) is not one of %d bytes", off, n, bs)
	}
	s.mu.Lock()
	bb := s.bb
	s.mu.Unlock()
	h := &urlHolder{c: s.c, bb: bb, renew: s.renew}
	id := BlockID(off)
	content = s.c.limitUpload(ctx, content)
	err := s.c.blobOp(ctx, h, "put block", func(bb *blockblob.Client) error {
		_, err := bb.StageBlock(ctx, id, streaming.NopCloser(io.NewSectionReader(content, off, n)), nil)
		return blobErr(ctx, "put block", err)
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// renew registers the version again for a fresh upload URL and keeps it.
func (s *Stager) renew(ctx context.Context) (string, error) {
	nt, err := s.c.Register(ctx, s.t, s.vi)
	if err != nil {
		return "", fmt.Errorf("stage: renewing URL of %s version %s: %w", s.t, s.vi, err)
	}
	if nt.VersionID != s.vi {
		return "", fmt.Errorf("stage: renewal of version %s answered version %s", s.vi, nt.VersionID)
	}
	bb, err := s.c.newBlobClient(nt.Upload)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	if s.url != nt.Upload {
		s.url, s.bb = nt.Upload, bb
	}
	s.mu.Unlock()
	return nt.Upload, nil
}
