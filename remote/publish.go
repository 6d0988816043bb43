package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
)

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
	// Acked lists the blocks an earlier run of Resume's version had staged,
	// with the block size it used (AckedBlockSize): when the resume succeeds
	// and the block size is the same, those blocks are not sent again.
	Acked          []string
	AckedBlockSize int64
	// OnBlockAcked is called, one call at a time, after each block is staged,
	// with the block size in use, so a caller can journal it for Acked.
	OnBlockAcked func(blockSize int64, id string)
}

// Publish = register → upload → poll until visible. It returns the metadata
// of the new version (with a download URL).
func (c *Client) Publish(ctx context.Context, t Target, content io.ReaderAt, size int64, o PublishOptions) (*FileMeta, error) {
	var ticket *UploadTicket
	committed := false
	var acked map[string]bool
	if o.Resume != nil {
		nt, err := c.Register(ctx, t, o.Resume.VersionID)
		switch {
		case err == nil:
			ticket = nt
			if nt.VersionID == o.Resume.VersionID && o.AckedBlockSize == c.cfg.BlockSize && len(o.Acked) > 0 {
				acked = make(map[string]bool, len(o.Acked))
				for _, id := range o.Acked {
					acked[id] = true
				}
			}
		case errors.Is(err, ErrNoUploadInProgress):
			// An earlier run already committed this version.
			ticket, committed = o.Resume, true
		case errors.Is(err, ErrNotFound):
			// Blocks are gone (or the file is): start over.
			c.log.WithField("target", t.String()).Debug("publish: resume ticket unknown, registering anew")
		default:
			return nil, err
		}
	}
	if ticket == nil {
		nt, err := c.Register(ctx, t, "")
		if err != nil {
			return nil, err
		}
		ticket = nt
	}
	if o.OnRegistered != nil {
		o.OnRegistered(ticket)
	}
	if !committed {
		uo := uploadOptions{progress: o.Progress, acked: acked, onAcked: o.OnBlockAcked}
		if err := c.upload(ctx, t, ticket, content, size, uo); err != nil {
			return nil, err
		}
	}
	return c.WaitVisible(ctx, ticket.FileID, ticket.VersionID)
}

// WaitVisible polls GetByID with backoff (PollMin doubling to PollMax) until
// the file's latest version is v, or PollTimeout passes.
//
// If the latest version is already newer than v (another writer committed
// after us), v is fetched by version id and returned once it is readable.
// 404 while polling means "not visible yet" (a new file); 410 (the file was
// deleted meanwhile) is returned as is. On timeout the error matches
// ErrNotVisible.
func (c *Client) WaitVisible(ctx context.Context, id uuid.UUID, v VersionID) (*FileMeta, error) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.PollTimeout)
	defer cancel()
	deadline, _ := pctx.Deadline()
	delay := c.cfg.PollMin
	for {
		m, err := c.pollOnce(pctx, id, v)
		if m != nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && pctx.Err() == nil {
			return nil, err
		}
		d := min(delay, time.Until(deadline))
		if d <= 0 || !sleep(pctx, d) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: file %s version %s after %v", ErrNotVisible, id, v, c.cfg.PollTimeout)
		}
		delay = min(delay*2, c.cfg.PollMax)
	}
}

// pollOnce returns v's metadata once visible, (nil, nil) while not yet.
func (c *Client) pollOnce(ctx context.Context, id uuid.UUID, v VersionID) (*FileMeta, error) {
	m, err := c.GetByID(ctx, id, GetOptions{})
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case m.VersionID == v:
		return m, nil
	case v.Less(m.VersionID):
		// Superseded by a later commit: ours is visible when it resolves by id.
		mv, err := c.GetByID(ctx, id, GetOptions{VersionID: v})
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return mv, err
	}
	return nil, nil
}
