package emulator

import (
	"context"
	"io"
	"time"

	"golang.org/x/time/rate"
)

// Link shapes blob transfers like the network between a real service and its
// clients, so that benchmarks can compare transfers at a realistic speed
// rather than at the speed of an in-process loopback (where the CPU of the
// two ends, not the network, is the limit). The zero value is no shaping.
//
// The link is full duplex: downloads (Get Blob bodies) and uploads (Put Blob
// and Put Block bodies) each have their own capacity, shared by all the
// transfers of that direction at once (one link, many connections).
type Link struct {
	// Bandwidth is the download capacity in bytes/s; 0 = unlimited.
	Bandwidth int64
	// UploadBandwidth is the upload capacity in bytes/s; 0 = unlimited.
	UploadBandwidth int64
	// RTT delays the first byte of every Get Blob answer, and every other
	// request (API calls, Put Blob, Put Block) before it is handled: one
	// round trip each, what sets the pace of many small requests.
	RTT time.Duration
}

// linkBurst is the most a download may send ahead of the link's rate.
const linkBurst = 256 << 10

// shaper applies a Link to blob bodies; nil shapes nothing.
type shaper struct {
	rtt time.Duration
	lim *rate.Limiter // downloads; nil = unlimited
	up  *rate.Limiter // uploads; nil = unlimited
}

// SetLink changes the shaping of transfers that start from now on.
func (s *Server) SetLink(l Link) { s.link.Store(newShaper(l)) }

func newShaper(l Link) *shaper {
	if l.Bandwidth <= 0 && l.UploadBandwidth <= 0 && l.RTT <= 0 {
		return nil
	}
	s := &shaper{rtt: l.RTT}
	if l.Bandwidth > 0 {
		s.lim = rate.NewLimiter(rate.Limit(l.Bandwidth), linkBurst)
	}
	if l.UploadBandwidth > 0 {
		s.up = rate.NewLimiter(rate.Limit(l.UploadBandwidth), linkBurst)
	}
	return s
}

// roundTrip delays a request other than Get Blob (which waits in firstByte)
// by the link's round trip; false when ctx ended first.
func (s *shaper) roundTrip(ctx context.Context, op Op) bool {
	if op == OpGetBlob {
		return true
	}
	return s.firstByte(ctx)
}

// body returns an upload body read at the link's upload bandwidth.
func (s *shaper) body(ctx context.Context, r io.Reader) io.Reader {
	if s == nil || s.up == nil {
		return r
	}
	return &pacedReader{ctx: ctx, r: r, lim: s.up}
}

type pacedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

// Read reads at most a burst, then waits for the link's tokens for what it read.
func (p *pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b[:min(len(b), linkBurst)])
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// firstByte waits out the round trip; false when ctx ended first.
func (s *shaper) firstByte(ctx context.Context) bool {
	if s == nil || s.rtt <= 0 {
		return true
	}
	t := time.NewTimer(s.rtt)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// copy sends src to w at the link's bandwidth. Paced writes are a burst
// each, so a slow link costs one timer wait per burst, not per 32 KiB.
func (s *shaper) copy(ctx context.Context, w io.Writer, src io.Reader) {
	if s == nil || s.lim == nil {
		io.Copy(w, src)
		return
	}
	pw := &pacedWriter{ctx: ctx, w: w, lim: s.lim}
	if _, ok := src.(io.WriterTo); ok {
		io.Copy(pw, src)
		return
	}
	io.CopyBuffer(pw, src, make([]byte, linkBurst))
}

type pacedWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
}

// Write waits for the link's tokens before each burst-sized piece of b.
func (p *pacedWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), linkBurst)
		if err := p.lim.WaitN(p.ctx, k); err != nil {
			return n, err
		}
		m, err := p.w.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
