package emulator

// Azurite blob backend: the File API stays this server's, but every blob
// lives in an Azure Storage account (Microsoft's Azurite emulator, or any
// account reachable with a shared key), and the pre-signed URLs the API
// hands out are that account's service SAS URLs, signed the way Azure signs
// them. Clients then move bytes with Microsoft's implementation of the blob
// protocol, exactly as against Azure.
//
// A version's blob is CONTAINER/FILE/VERSION (file ids are unique). The server cannot see
// uploads, so a watcher polls the blobs of registered, uncommitted versions
// (Get Blob Properties) and commits a version once its blob exists.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/google/uuid"
)

// AzuriteAccount is the well-known development account of Azurite.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// AzureBlobs configures the Azurite (Azure Storage) blob backend.
type AzureBlobs struct {
	// Endpoint is the account's blob endpoint, e.g.
	// http://127.0.0.1:10000/devstoreaccount1 (Azurite's path style).
	Endpoint  string
	Account   string // default AzuriteAccount
	Key       string // base64 shared key; default AzuriteKey
	Container string // default "evofs"; created when missing
	// Poll is how often uncommitted uploads are looked for (default 50ms).
	Poll time.Duration
}

// azureStore keeps committed blobs in the account. Staging (PutFile) is in
// memory; the emulator's own blob endpoint is not used with this backend.
type azureStore struct {
	cfg  AzureBlobs
	cred *blob.SharedKeyCredential
}

// blobURL is the (unsigned) URL of a blob of the container.
func (a *azureStore) blobURL(name string) string {
	return a.cfg.Endpoint + "/" + a.cfg.Container + "/" + escapeBlobName(name)
}

func (a *azureStore) blobClient(name string) (*blob.Client, error) {
	return blob.NewClientWithSharedKeyCredential(a.blobURL(name), a.cred, nil)
}

// createContainer creates the container (Create Container with an account
// SAS: the container package of the SDK drags in a columnar-data library).
func (a *azureStore) createContainer(ctx context.Context) error {
	q, err := sas.AccountSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour).UTC(),
		Permissions:   (&sas.AccountPermissions{Create: true, Write: true}).String(),
		ResourceTypes: (&sas.AccountResourceTypes{Container: true}).String()}.SignWithSharedKey(a.cred)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, a.cfg.Endpoint+"/"+a.cfg.Container+"?restype=container&"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

func newAzureStore(cfg AzureBlobs) (*azureStore, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("azure blobs: an endpoint is required")
	}
	cfg.Endpoint = strings.TrimRight(cfg.Endpoint, "/")
	if cfg.Account == "" {
		cfg.Account = AzuriteAccount
	}
	if cfg.Key == "" {
		cfg.Key = AzuriteKey
	}
	if cfg.Container == "" {
		cfg.Container = "evofs"
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	cred, err := blob.NewSharedKeyCredential(cfg.Account, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("azure blobs: %w", err)
	}
	a := &azureStore{cfg: cfg, cred: cred}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.createContainer(ctx); err != nil {
		return nil, fmt.Errorf("azure blobs: creating container %s at %s: %w", cfg.Container, cfg.Endpoint, err)
	}
	return a, nil
}

func azureBlobName(fid uuid.UUID, vid int64) string {
	return fmt.Sprintf("%s/%d", fid, vid)
}

// signedURL is a service SAS URL of a version's blob: permissions "r"
// (download, with the file name as Content-Disposition) or "cw" (upload).
func (a *azureStore) signedURL(fid uuid.UUID, vid int64, write bool, expiry time.Time, filename string) (string, error) {
	name := azureBlobName(fid, vid)
	perms := sas.BlobPermissions{Read: true}
	v := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: expiry.UTC(),
		ContainerName: a.cfg.Container, BlobName: name}
	if write {
		perms = sas.BlobPermissions{Create: true, Write: true}
	} else {
		v.ContentDisposition = "attachment; filename*=UTF-8''" + url.PathEscape(filename)
	}
	v.Permissions = perms.String()
	q, err := v.SignWithSharedKey(a.cred)
	if err != nil {
		return "", err
	}
	return a.blobURL(name) + "?" + q.Encode(), nil
}

func escapeBlobName(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// uploaded reports the size, ETag and MD5 of a version's blob once it exists.
func (a *azureStore) uploaded(ctx context.Context, name string) (size int64, etag string, md5sum []byte, ok bool, err error) {
	bc, err := a.blobClient(name)
	if err != nil {
		return 0, "", nil, false, err
	}
	props, err := bc.GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return 0, "", nil, false, nil
	}
	if err != nil {
		return 0, "", nil, false, err
	}
	if props.ContentLength != nil {
		size = *props.ContentLength
	}
	if props.ETag != nil {
		etag = string(*props.ETag)
	}
	return size, etag, props.ContentMD5, true, nil
}

// blobStore, for PutFile/ReadFile and replay: parts in memory until
// published, then named by path "az:NAME".

func (a *azureStore) stage(r io.Reader, n int64) (part, []byte, error) { return memStore{}.stage(r, n) }
func (a *azureStore) join(parts []part) (part, error)                  { return memStore{}.join(parts) }
func (a *azureStore) discard(part)                                     {}

func (a *azureStore) publish(p part, fid uuid.UUID, vid int64) (part, error) {
	if strings.HasPrefix(p.path, "az:") {
		return p, nil
	}
	r, c, err := memStore{}.open(p)
	if err != nil {
		return part{}, err
	}
	defer c.Close()
	buf := make([]byte, p.size)
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return part{}, err
	}
	name := azureBlobName(fid, vid)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bb, err := blockblob.NewClientWithSharedKeyCredential(a.blobURL(name), a.cred, nil)
	if err != nil {
		return part{}, err
	}
	if _, err := bb.UploadBuffer(ctx, buf, nil); err != nil {
		return part{}, fmt.Errorf("azure blobs: upload %s: %w", name, err)
	}
	return part{path: "az:" + name, size: p.size}, nil
}

func (a *azureStore) open(p part) (io.ReaderAt, io.Closer, error) {
	name, ok := strings.CutPrefix(p.path, "az:")
	if !ok {
		return memStore{}.open(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	buf := make([]byte, p.size)
	if p.size > 0 {
		bc, err := a.blobClient(name)
		if err != nil {
			return nil, nil, err
		}
		if _, err := bc.DownloadBuffer(ctx, buf, nil); err != nil {
			return nil, nil, fmt.Errorf("azure blobs: download %s: %w", name, err)
		}
	}
	return bytes.NewReader(buf), io.NopCloser(nil), nil
}

// load names a replayed version's blob.
func (a *azureStore) load(fid uuid.UUID, vid int64, size int64) part {
	return part{path: "az:" + azureBlobName(fid, vid), size: size}
}

// watchUploads commits registered versions whose blob appeared, until ctx
// ends.
func (s *Server) watchUploads(ctx context.Context, a *azureStore) {
	t := time.NewTicker(a.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		type pending struct {
			w    *workspace
			f    *file
			v    *version
			name string
		}
		var todo []pending
		s.mu.Lock()
		now := s.nowLocked()
		for _, w := range s.workspaces {
			for _, f := range w.files {
				for _, v := range f.versions {
					if !v.committed && now.Sub(v.createdAt) < uploadKeep {
						todo = append(todo, pending{w, f, v, azureBlobName(f.id, v.id)})
					}
				}
			}
		}
		s.mu.Unlock()
		for _, p := range todo {
			size, _, sum, ok, err := a.uploaded(ctx, p.name)
			if err != nil || !ok {
				if err != nil && ctx.Err() == nil {
					s.log.WithError(err).Debug("azure blobs: properties of an upload")
				}
				continue
			}
			s.mu.Lock()
			if !p.v.committed && !s.closed {
				if err := s.commitLocked(p.w, p.f, p.v, part{path: "az:" + p.name, size: size}, sum, false); err != nil {
					s.log.WithError(err).Warn("azure blobs: commit")
				}
			}
			s.mu.Unlock()
		}
	}
}
