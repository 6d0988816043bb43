package emulator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

func randBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func sdkClient(t *testing.T, u string) *blockblob.Client {
	t.Helper()
	// No retries: an emulator bug must show as an error, not be papered over.
	c, err := blockblob.NewClientWithNoCredential(u, &blockblob.ClientOptions{ClientOptions: policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// register returns the upload URL of a new version at p.
func (c *tclient) register(p string) (upload, fid, vid string) {
	c.t.Helper()
	r := c.api("PUT", "path/"+escPath(p))
	if r.status != 200 {
		c.t.Fatalf("upsert %s: %d %s", p, r.status, r.body)
	}
	m := r.json(c.t)
	return m["upload"].(string), m["file_id"].(string), m["version_id"].(string)
}

func (c *tclient) downloadURL(p string) (string, map[string]any) {
	c.t.Helper()
	r := c.api("GET", "path/"+escPath(p))
	if r.status != 200 {
		c.t.Fatalf("get %s: %d %s", p, r.status, r.body)
	}
	m := r.json(c.t)
	return m["download"].(string), m
}

func TestAzureSDKBlockBlob(t *testing.T) {
	for _, tc := range []struct {
		name string
		disk bool
		size int
	}{{"memory-64MiB", false, 64 << 20}, {"disk-16MiB", true, 16 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{}
			if tc.disk {
				o.DataDir = t.TempDir()
			}
			c := newClient(t, o)
			ctx := context.Background()
			data := randBytes(tc.size, 42)
			want := sha256.Sum256(data)

			// Staged upload: Put Block ×N in parallel + Put Block List.
			up, _, vid := c.register("big/data.bin")
			if _, err := sdkClient(t, up).UploadStream(ctx, bytes.NewReader(data), &blockblob.UploadStreamOptions{BlockSize: 4 << 20, Concurrency: 4}); err != nil {
				t.Fatalf("UploadStream: %v", err)
			}
			if n := c.ts.Requests(OpPutBlock); n != tc.size/(4<<20) {
				t.Fatalf("put-block requests %d", n)
			}
			if c.ts.Requests(OpPutBlockList) != 1 {
				t.Fatalf("put-block-list requests %d", c.ts.Requests(OpPutBlockList))
			}
			dl, meta := c.downloadURL("big/data.bin")
			if meta["version_id"] != vid {
				t.Fatalf("version %v want %s", meta["version_id"], vid)
			}
			rc := sdkClient(t, dl)
			props, err := rc.GetProperties(ctx, nil)
			if err != nil {
				t.Fatalf("GetProperties: %v", err)
			}
			if *props.ContentLength != int64(tc.size) || props.ETag == nil || props.LastModified == nil || *props.AcceptRanges != "bytes" {
				t.Fatalf("props %+v", props)
			}
			buf := make([]byte, tc.size)
			n, err := rc.DownloadBuffer(ctx, buf, &blob.DownloadBufferOptions{BlockSize: 4 << 20, Concurrency: 4})
			if err != nil || n != int64(tc.size) || sha256.Sum256(buf) != want {
				t.Fatalf("DownloadBuffer n=%d err=%v (content mismatch?)", n, err)
			}
			fpath := filepath.Join(t.TempDir(), "out")
			f, err := os.Create(fpath)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := rc.DownloadFile(ctx, f, &blob.DownloadFileOptions{BlockSize: 3 << 20, Concurrency: 4}); err != nil || n != int64(tc.size) {
				t.Fatalf("DownloadFile n=%d err=%v", n, err)
			}
			f.Close()
			got, _ := os.ReadFile(fpath)
			if sha256.Sum256(got) != want {
				t.Fatal("DownloadFile content mismatch")
			}
			ds, err := rc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: 1000, Count: 5000}})
			if err != nil {
				t.Fatalf("DownloadStream: %v", err)
			}
			part, err := io.ReadAll(ds.Body)
			ds.Body.Close()
			if err != nil || !bytes.Equal(part, data[1000:6000]) || *ds.ContentRange != "bytes 1000-5999/"+strconv.Itoa(tc.size) {
				t.Fatalf("ranged DownloadStream: err=%v len=%d range=%v", err, len(part), ds.ContentRange)
			}
			ds, err = rc.DownloadStream(ctx, nil)
			if err != nil {
				t.Fatalf("DownloadStream: %v", err)
			}
			whole, _ := io.ReadAll(ds.Body)
			ds.Body.Close()
			if sha256.Sum256(whole) != want {
				t.Fatal("DownloadStream content mismatch")
			}
			// Past the end → InvalidRange.
			_, err = rc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: int64(tc.size), Count: 10}})
			if !bloberror.HasCode(err, bloberror.InvalidRange) {
				t.Fatalf("past end: %v", err)
			}

			// Single-shot uploads: Upload and UploadBuffer.
			small := randBytes(300_000, 7)
			up2, _, vid2 := c.register("small.bin")
			if _, err := sdkClient(t, up2).Upload(ctx, nopRSC{bytes.NewReader(small)}, nil); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			up3, _, vid3 := c.register("small.bin")
			if _, err := sdkClient(t, up3).UploadBuffer(ctx, small[:1234], nil); err != nil {
				t.Fatalf("UploadBuffer: %v", err)
			}
			dl3, m3 := c.downloadURL("small.bin")
			if m3["version_id"] != vid3 || vid3 <= vid2 {
				t.Fatalf("latest %v, want %s (> %s)", m3["version_id"], vid3, vid2)
			}
			buf = make([]byte, 1234)
			if _, err := sdkClient(t, dl3).DownloadBuffer(ctx, buf, nil); err != nil || !bytes.Equal(buf, small[:1234]) {
				t.Fatalf("download small: %v", err)
			}

			// Retired upload URL, read-only URL, expired URL.
			if _, err := sdkClient(t, up3).UploadBuffer(ctx, small, nil); !bloberror.HasCode(err, bloberror.AuthenticationFailed) {
				t.Fatalf("write after commit: %v", err)
			}
			if _, err := sdkClient(t, dl3).UploadBuffer(ctx, small, nil); !bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch) {
				t.Fatalf("write via read URL: %v", err)
			}
			c.ts.ExpireURLs()
			if _, err := sdkClient(t, dl3).GetProperties(ctx, nil); !bloberror.HasCode(err, bloberror.AuthenticationFailed) {
				t.Fatalf("expired HEAD: %v", err)
			}
			if _, err := sdkClient(t, dl3).DownloadStream(ctx, nil); !bloberror.HasCode(err, bloberror.AuthenticationFailed) {
				t.Fatalf("expired GET: %v", err)
			}
		})
	}
}

type nopRSC struct{ *bytes.Reader }

func (nopRSC) Close() error { return nil }
