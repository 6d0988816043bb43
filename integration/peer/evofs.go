package main

// evofs's side: `evofs serve` with its blobs in Azurite, the File API
// client that seeds it and reads back what is stored, and `evofs mount`.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"evofs/fusefs/control"
	"evofs/remote"
)

// evofsTool is evofs mounted over `evofs serve --blob-backend azurite=...`.
type evofsTool struct {
	bin      string
	url      string // File API base URL
	token    string // never printed
	org, ws  uuid.UUID
	client   *remote.Client
	version  string
	serveLog *proc
}

func startEvofs(az *azurite) *evofsTool {
	tb := make([]byte, 16)
	rand.Read(tb)
	t := &evofsTool{bin: cfg.evofs, token: hex.EncodeToString(tb), org: uuid.New(), ws: uuid.New()}
	p := start("evofs-serve", nil, t.bin, "serve", "--addr", "127.0.0.1:0", "--token", t.token,
		"--blob-backend", "azurite="+az.endpoint, "--log-level", "warn")
	t.serveLog = p
	t.url = p.waitLine(regexp.MustCompile(`File API at (http://\S+)`), time.Minute)
	c, err := remote.New(remote.Config{BaseURL: t.url, Org: t.org, Workspace: t.ws, Tokens: remote.StaticToken(t.token),
		PollMin: 10 * time.Millisecond, PollMax: 200 * time.Millisecond})
	check(err, "File API client")
	t.client = c
	v, _ := runOut(t.bin, "version")
	t.version = strings.TrimSpace(strings.SplitN(v, "\n", 2)[0])
	return t
}

func (t *evofsTool) name() string { return "evofs" }

func (t *evofsTool) mount(label, cacheDir string) *mount {
	dir := filepath.Join(cfg.tmp, "mnt-"+label)
	check(os.MkdirAll(dir, 0o755), "mountpoint")
	check(os.MkdirAll(cacheDir, 0o700), "cache dir")
	p := start(label, []string{"EVO_TOKEN=" + t.token}, t.bin, "mount", "--host", t.url,
		"--org", t.org.String(), "--workspace", t.ws.String(), "--cache-dir", cacheDir,
		"--write-back-delay", cfg.writeBack.String(), "--transfers", transfers, dir)
	m := &mount{dir: dir, p: p, cacheDir: cacheDir}
	atCleanup(func() { m.p.kill(); unmount(dir) })
	waitMounted(p, dir, time.Minute)
	return m
}

// waitStored waits until the mount has published every closed file (what
// `evofs status --wait` waits for, asked every 50 ms).
func (t *evofsTool) waitStored(m *mount, timeout time.Duration) {
	sock, err := control.Locate(m.dir)
	check(err, "finding the control socket")
	c := control.NewClient(sock)
	defer c.CloseIdle()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o, _, err := c.Wait(ctx, 50*time.Millisecond)
	if o != control.Published {
		fail("evofs did not publish everything within %v (outcome %v, %v):\n%s", timeout, o, err, m.p.tail(20))
	}
}

func (t *evofsTool) seed(ctx context.Context, path string, r io.ReaderAt, size int64) {
	_, err := t.client.Publish(ctx, remote.Target{Path: path}, r, size, remote.PublishOptions{})
	check(err, "publishing "+path)
}

func (t *evofsTool) seedSmall(ctx context.Context, path string, data []byte) error {
	_, err := t.client.Publish(ctx, remote.Target{Path: path}, bytes.NewReader(data), int64(len(data)), remote.PublishOptions{})
	return err
}

// direct is the baseline upload: one Publish of the File API client
// (register, parallel block upload, wait until the version is visible).
func (t *evofsTool) direct(ctx context.Context, local, path string) time.Duration {
	f, err := os.Open(local)
	check(err, "opening "+local)
	defer f.Close()
	st, err := f.Stat()
	check(err, "stat")
	return timed(func() { t.seed(ctx, path, f, st.Size()) })
}

// downloadURL is the pre-signed (Azurite SAS) URL of path's current version.
func (t *evofsTool) downloadURL(ctx context.Context, path string) string {
	meta, err := t.client.GetByPath(ctx, path, remote.GetOptions{})
	check(err, "metadata of "+path)
	return meta.Download
}

// stored returns the size and sha256 of path's current version as the File
// API serves it; ok is false when the path has no version.
func (t *evofsTool) stored(ctx context.Context, path string) (int64, [32]byte, bool) {
	var sum [32]byte
	meta, err := t.client.GetByPath(ctx, path, remote.GetOptions{})
	if err != nil {
		if isNotFound(err) {
			return 0, sum, false
		}
		fail("metadata of %s: %v", path, err)
	}
	resp, err := http.Get(meta.Download)
	check(err, "downloading "+path)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fail("downloading %s: HTTP %d", path, resp.StatusCode)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	check(err, "downloading "+path)
	copy(sum[:], h.Sum(nil))
	return n, sum, true
}

func isNotFound(err error) bool { return errors.Is(err, remote.ErrNotFound) }

// list returns the workspace's files under prefix (one listing).
func (t *evofsTool) list(ctx context.Context, prefix string) map[string]listed {
	all, err := t.client.ListAll(ctx, remote.ListOptions{})
	check(err, "listing the workspace")
	out := map[string]listed{}
	for _, f := range all {
		p := strings.TrimPrefix(f.Path, "/") + f.Name
		if strings.HasPrefix(p, prefix) {
			out[p] = listed{size: f.Size, version: fmt.Sprint(f.VersionID)}
		}
	}
	return out
}
