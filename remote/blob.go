package remote

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/google/uuid"
)

// Blob transfers through the Azure SDK's block-blob client.
//
// The SDK only builds and parses requests: its own retries are off (we retry
// per chunk with RetryPolicy), Expect: 100-continue is off, and its requests
// go through the Client's http.Client. SDK errors never leave this file
// unconverted: an azcore.ResponseError becomes a *BlobError and anything else
// a redacted *transportError, because both embed the pre-signed URL.
//
// A transfer holds its URL in a urlHolder. When a chunk finds the URL
// expired (ErrURLExpired), the holder renews it once per transfer (re-register
// with the version id for uploads, get by id with the version id for
// downloads) and every chunk then continues on the new URL; blocks already
// acknowledged are never sent again.

// maxBlocks is the Put Block List limit.
const maxBlocks = 50000

// newBlobClient makes an SDK client for one pre-signed URL.
func (c *Client) newBlobClient(u string) (*blockblob.Client, error) {
	o := &blockblob.ClientOptions{}
	o.Transport = c.http
	o.Retry = policy.RetryOptions{MaxRetries: -1}
	o.Telemetry = policy.TelemetryOptions{Disabled: true}
	o.ExpectContinueBehavior = blob.ExpectContinueOptions{Mode: blob.ExpectContinueModeOff}
	o.PerRetryPolicies = []policy.Policy{newSASQueryPolicy(u)}
	bb, err := blockblob.NewClientWithNoCredential(u, o)
	if err != nil {
		return nil, fmt.Errorf("blob client for %s: %s", RedactURL(u), redactText(err.Error()))
	}
	return bb, nil
}

// sasQueryPolicy keeps the pre-signed query string exactly as issued: the
// generated SDK code re-encodes and sorts the whole query when it adds
// comp/blockid; this puts the original back and appends only the new keys.
type sasQueryPolicy struct {
	raw  string
	keys map[string]bool
}

func newSASQueryPolicy(u string) *sasQueryPolicy {
	p := &sasQueryPolicy{keys: map[string]bool{}}
	if pu, err := url.Parse(u); err == nil {
		p.raw = pu.RawQuery
		for k := range pu.Query() {
			p.keys[k] = true
		}
	}
	return p
}

func (p *sasQueryPolicy) Do(req *policy.Request) (*http.Response, error) {
	r := req.Raw()
	if p.raw != "" {
		q := r.URL.Query()
		extra := url.Values{}
		for k, v := range q {
			if !p.keys[k] {
				extra[k] = v
			}
		}
		rq := p.raw
		if len(extra) > 0 {
			rq += "&" + strings.ReplaceAll(extra.Encode(), "+", "%20")
		}
		r.URL.RawQuery = rq
	}
	return req.Next()
}

// blobErr converts an SDK error (see the file comment).
func blobErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		be := &BlobError{Op: op, Status: re.StatusCode, Code: re.ErrorCode}
		if re.RawResponse != nil {
			be.RetryAfter = re.RawResponse.Header.Get("Retry-After")
			if be.Code == "" {
				be.Code = re.RawResponse.Header.Get("x-ms-error-code")
			}
		}
		return be
	}
	return wrapTransport(ctx, op, err)
}

// urlHolder is the current pre-signed URL of one transfer and its client.
type urlHolder struct {
	c     *Client
	renew func(ctx context.Context) (string, error)

	mu      sync.Mutex
	gen     int               // bumped on every renewal; guarded by mu
	bb      *blockblob.Client // guarded by mu
	renewed bool              // the once-per-transfer renewal is spent; guarded by mu
}

func (h *urlHolder) current() (*blockblob.Client, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bb, h.gen
}

// renewFrom is called when a chunk found generation g's URL expired (cause).
// It returns nil when a newer URL is ready (renewed now or by another chunk).
func (h *urlHolder) renewFrom(ctx context.Context, g int, cause error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != g {
		return nil
	}
	if h.renewed {
		return cause
	}
	h.renewed = true
	u, err := h.renew(ctx)
	if err != nil {
		return err
	}
	bb, err := h.c.newBlobClient(u)
	if err != nil {
		return err
	}
	h.c.log.WithField("url", RedactURL(u)).Debug("pre-signed URL renewed")
	h.bb, h.gen = bb, h.gen+1
	return nil
}

// blobOp runs one chunk operation with retries, renewing the URL on expiry.
// fn must return errors converted by blobErr.
func (c *Client) blobOp(ctx context.Context, h *urlHolder, op string, fn func(bb *blockblob.Client) error) error {
	for {
		bb, g := h.current()
		err := c.retry(ctx, op, func(int) error { return fn(bb) })
		if err == nil || !errors.Is(err, ErrURLExpired) {
			return err
		}
		if rerr := h.renewFrom(ctx, g, err); rerr != nil {
			return rerr
		}
	}
}

// progressCounter serialises progress callbacks and keeps them monotonic.
type progressCounter struct {
	fn   func(int64)
	mu   sync.Mutex
	done int64
}

func (p *progressCounter) add(n int64) {
	if p.fn == nil || n == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.fn(p.done)
}

// parallel runs fn(i) for i in [0, n) on up to workers goroutines. The first
// error stops the feeding of new indices, cancels the others' context and is
// returned (the parent's context error if the parent ended).
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	workers = max(1, min(workers, n))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := fn(cctx, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-cctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return firstErr
}

// BlockID is the id of the block starting at byte offset off: base64 of the
// offset as a 32-digit zero-padded decimal (the SDK's scheme; all ids of a
// blob have the same length).
func BlockID(off int64) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%032d", off))
}

// Upload sends size bytes of content to the ticket's upload URL: one Put
// Blob up to SinglePutThreshold, else parallel Put Block + Put Block List.
// On an expired URL it re-registers t (with the ticket's version id) once and
// continues. The ticket's Upload field is updated with a renewed URL.
// progress (may be nil) gets the cumulative bytes acknowledged, from one
// goroutine at a time.
//
// If the renewal answers no-file-upload-in-progress while committing, an
// earlier try of the commit did land: Upload reports success.
func (c *Client) Upload(ctx context.Context, t Target, ticket *UploadTicket, content io.ReaderAt, size int64, progress func(done int64)) error {
	return c.upload(ctx, t, ticket, content, size, uploadOptions{progress: progress})
}

// uploadOptions are Upload's knobs for a resumed block upload.
type uploadOptions struct {
	progress func(done int64)
	acked    map[string]bool                  // blocks already staged (same block size)
	onAcked  func(blockSize int64, id string) // called one at a time
}

func (c *Client) upload(ctx context.Context, t Target, ticket *UploadTicket, content io.ReaderAt, size int64, o uploadOptions) error {
	progress := o.progress
	if ticket == nil || ticket.Upload == "" {
		return errors.New("upload: ticket without an upload URL")
	}
	if size < 0 {
		return fmt.Errorf("upload: negative size %d", size)
	}
	bb, err := c.newBlobClient(ticket.Upload)
	if err != nil {
		return err
	}
	h := &urlHolder{c: c, bb: bb, renew: func(ctx context.Context) (string, error) {
		nt, err := c.Register(ctx, t, ticket.VersionID)
		if err != nil {
			return "", fmt.Errorf("upload: renewing URL of %s version %s: %w", t, ticket.VersionID, err)
		}
		if nt.VersionID != ticket.VersionID {
			return "", fmt.Errorf("upload: renewal of version %s answered version %s", ticket.VersionID, nt.VersionID)
		}
		ticket.Upload = nt.Upload
		return nt.Upload, nil
	}}
	content = c.limitUpload(ctx, content)
	prog := &progressCounter{fn: progress}
	log := c.log.WithField("target", t.String()).WithField("version", ticket.VersionID).WithField("size", size)

	if size <= c.cfg.SinglePutThreshold {
		log.Debug("upload: put blob")
		err := c.blobOp(ctx, h, "put blob", func(bb *blockblob.Client) error {
			_, err := bb.Upload(ctx, streaming.NopCloser(io.NewSectionReader(content, 0, size)), nil)
			return blobErr(ctx, "put blob", err)
		})
		if err != nil && !errors.Is(err, ErrNoUploadInProgress) {
			return err
		}
		prog.add(size)
		return nil
	}

	bs := c.cfg.BlockSize
	if (size+bs-1)/bs > maxBlocks {
		bs = (size + maxBlocks - 1) / maxBlocks
	}
	n := int((size + bs - 1) / bs)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = BlockID(int64(i) * bs)
	}
	log.WithField("blocks", n).WithField("already_staged", len(o.acked)).Debug("upload: put blocks")
	var ackMu sync.Mutex
	err = parallel(ctx, n, c.cfg.Concurrency, func(ctx context.Context, i int) error {
		off := int64(i) * bs
		l := min(bs, size-off)
		if o.acked[ids[i]] && bs == c.cfg.BlockSize {
			prog.add(l) // staged by an earlier run of this version
			return nil
		}
		err := c.blobOp(ctx, h, "put block", func(bb *blockblob.Client) error {
			_, err := bb.StageBlock(ctx, ids[i], streaming.NopCloser(io.NewSectionReader(content, off, l)), nil)
			return blobErr(ctx, "put block", err)
		})
		if err == nil {
			prog.add(l)
			if o.onAcked != nil {
				ackMu.Lock()
				o.onAcked(bs, ids[i])
				ackMu.Unlock()
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	err = c.blobOp(ctx, h, "put block list", func(bb *blockblob.Client) error {
		_, err := bb.CommitBlockList(ctx, ids, nil)
		return blobErr(ctx, "put block list", err)
	})
	if err != nil && !errors.Is(err, ErrNoUploadInProgress) {
		return err
	}
	return nil
}

// Blob is a readable version's blob. It keeps the current download URL and
// renews it (GetByID with the version id) once when a transfer finds it
// expired. Safe for concurrent use.
type Blob struct {
	FileID    uuid.UUID
	VersionID VersionID
	Size      int64

	mu  sync.Mutex
	url string            // guarded by mu; "" = not known yet
	bb  *blockblob.Client // client for url; guarded by mu
}

// NewBlob makes a Blob from metadata. Metadata without a download URL (a
// listing row) is fine: the first Download fetches one.
func (c *Client) NewBlob(m *FileMeta) *Blob {
	return &Blob{FileID: m.FileID, VersionID: m.VersionID, Size: m.Size, url: m.Download}
}

// URL returns the current download URL ("" if none is known yet).
func (b *Blob) URL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.url
}

// client returns the blob's SDK client, making one (and, with no URL yet,
// fetching one) as needed.
func (c *Client) blobClient(ctx context.Context, b *Blob) (*blockblob.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bb != nil {
		return b.bb, nil
	}
	if b.url == "" {
		u, err := c.downloadURL(ctx, b)
		if err != nil {
			return nil, err
		}
		b.url = u
	}
	bb, err := c.newBlobClient(b.url)
	if err != nil {
		return nil, err
	}
	b.bb = bb
	return bb, nil
}

func (c *Client) downloadURL(ctx context.Context, b *Blob) (string, error) {
	m, err := c.GetByID(ctx, b.FileID, GetOptions{VersionID: b.VersionID, Deleted: true})
	if err != nil {
		return "", fmt.Errorf("download: renewing URL of %s version %s: %w", b.FileID, b.VersionID, err)
	}
	if m.Download == "" {
		return "", fmt.Errorf("download: %w: no download URL for %s", errBadResponse, b.FileID)
	}
	return m.Download, nil
}

// Download copies bytes [off, off+n) of the blob into w at the same offsets
// (w.WriteAt(p, off+i)), in parallel ranged GETs of BlockSize when n is large.
// progress (may be nil) is called with the cumulative bytes written, from one
// goroutine at a time. The range must lie within b.Size.
func (c *Client) Download(ctx context.Context, b *Blob, w io.WriterAt, off, n int64, progress func(done int64)) error {
	if off < 0 || n < 0 || off+n > b.Size {
		return fmt.Errorf("download: range [%d, %d) outside blob of %d bytes", off, off+n, b.Size)
	}
	if n == 0 {
		return nil
	}
	bb, err := c.blobClient(ctx, b)
	if err != nil {
		return err
	}
	w = c.limitDownload(ctx, w)
	h := &urlHolder{c: c, bb: bb, renew: func(ctx context.Context) (string, error) {
		u, err := c.downloadURL(ctx, b)
		if err != nil {
			return "", err
		}
		b.mu.Lock()
		b.url, b.bb = u, nil
		b.mu.Unlock()
		return u, nil
	}}
	prog := &progressCounter{fn: progress}
	bs := c.cfg.BlockSize
	chunks := int((n + bs - 1) / bs)
	return parallel(ctx, chunks, c.cfg.Concurrency, func(ctx context.Context, i int) error {
		start := off + int64(i)*bs
		l := min(bs, off+n-start)
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		err := c.blobOp(ctx, h, "get blob", func(bb *blockblob.Client) error {
			return getRange(ctx, bb, w, start, l, *buf)
		})
		if err == nil {
			prog.add(l)
		}
		return err
	})
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// writeErr marks a failure of the destination (not retried).
type writeErr struct{ err error }

func (e *writeErr) Error() string { return "download: writing: " + e.err.Error() }
func (e *writeErr) Unwrap() error { return e.err }

type offsetWriter struct {
	w   io.WriterAt
	off int64
	err error
}

func (o *offsetWriter) Write(p []byte) (int, error) {
	n, err := o.w.WriteAt(p, o.off)
	o.off += int64(n)
	if err != nil {
		o.err = err
	}
	return n, err
}

// getRange GETs bytes [off, off+l) into w. A short or broken body is a
// transport error (retried); a failing w is not.
func getRange(ctx context.Context, bb *blockblob.Client, w io.WriterAt, off, l int64, buf []byte) error {
	resp, err := bb.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: l}})
	if err != nil {
		return blobErr(ctx, "get blob", err)
	}
	defer resp.Body.Close()
	if resp.ContentRange == nil && off != 0 {
		return &BlobError{Op: "get blob", Status: http.StatusOK, Code: "RangeIgnored"}
	}
	ow := &offsetWriter{w: w, off: off}
	got, err := io.CopyBuffer(ow, io.LimitReader(resp.Body, l), buf)
	if ow.err != nil {
		return &writeErr{ow.err}
	}
	if err == nil && got < l {
		err = io.ErrUnexpectedEOF
	}
	return wrapTransport(ctx, "get blob", err)
}
