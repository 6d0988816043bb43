package remote

import (
	"context"
	"io"

	"golang.org/x/time/rate"
)

// Bandwidth limits: Config.UploadLimit and Config.DownloadLimit bound the
// blob bytes sent and received per second, across every transfer of the
// Client (each direction has its own token bucket). Uploads wait before the
// SDK gets the bytes of a block; downloads wait before each write of a
// received range, which holds the connection's reads back, so TCP flow
// control slows the sender.

// newLimiter returns a limiter for bps bytes/s (nil: unlimited). The burst
// is a tenth of a second's worth, at least 64 KiB so that each copy buffer
// passes in a few waits.
func newLimiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bps), int(max(64<<10, bps/10)))
}

// waitBytes takes n bytes' worth of tokens from l, in bursts.
func waitBytes(ctx context.Context, l *rate.Limiter, n int) error {
	for n > 0 {
		k := min(n, l.Burst())
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// limitedReaderAt paces reads of upload content.
type limitedReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
	l   *rate.Limiter
}

func (r *limitedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(p, off)
	if werr := waitBytes(r.ctx, r.l, n); werr != nil {
		return 0, werr
	}
	return n, err
}

// limitedWriterAt paces writes of downloaded bytes.
type limitedWriterAt struct {
	ctx context.Context
	w   io.WriterAt
	l   *rate.Limiter
}

func (w *limitedWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if err := waitBytes(w.ctx, w.l, len(p)); err != nil {
		return 0, err
	}
	return w.w.WriteAt(p, off)
}

func (c *Client) limitUpload(ctx context.Context, r io.ReaderAt) io.ReaderAt {
	if c.upLimit == nil {
		return r
	}
	return &limitedReaderAt{ctx: ctx, r: r, l: c.upLimit}
}

func (c *Client) limitDownload(ctx context.Context, w io.WriterAt) io.WriterAt {
	if c.downLimit == nil {
		return w
	}
	return &limitedWriterAt{ctx: ctx, w: w, l: c.downLimit}
}
