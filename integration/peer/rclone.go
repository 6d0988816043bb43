package main

// rclone's side: `rclone mount --vfs-cache-mode full` of a container of the
// same Azurite (remote "peer:", configured by environment variables with a
// container SAS URL, which is how rclone 1.60 reaches an account on any
// host and port), its rc interface for the upload queue, and `rclone
// copyto` as its direct upload.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const rcloneContainer = "rclone"

type rcloneTool struct {
	az      *azurite
	env     []string // carries the SAS URL: never printed
	config  string   // an empty config file
	version string
}

func newRclone(az *azurite) *rcloneTool {
	bin, err := exec.LookPath("rclone")
	check(err, "rclone is not installed (apt-get install rclone)")
	az.createContainer(rcloneContainer)
	conf := filepath.Join(cfg.tmp, "rclone.conf")
	check(os.WriteFile(conf, nil, 0o600), "rclone config")
	t := &rcloneTool{az: az, config: conf, env: []string{
		"RCLONE_CONFIG_PEER_TYPE=azureblob",
		"RCLONE_CONFIG_PEER_SAS_URL=" + az.containerSASURL(rcloneContainer),
	}}
	v, _ := runOut(bin, "version")
	t.version = strings.TrimSpace(strings.SplitN(v, "\n", 2)[0])
	return t
}

func (t *rcloneTool) name() string { return "rclone" }

func (t *rcloneTool) mount(label, cacheDir string) *mount {
	dir := filepath.Join(cfg.tmp, "mnt-"+label)
	check(os.MkdirAll(dir, 0o755), "mountpoint")
	check(os.MkdirAll(cacheDir, 0o700), "cache dir")
	rc := freeAddr()
	p := start(label, t.env, "rclone", "mount", "peer:"+rcloneContainer, dir, "--config", t.config,
		"--vfs-cache-mode", "full", "--cache-dir", cacheDir, "--vfs-write-back", cfg.writeBack.String(),
		"--transfers", transfers, "--rc", "--rc-addr", rc, "--rc-no-auth")
	m := &mount{dir: dir, p: p, cacheDir: cacheDir, rcAddr: rc}
	atCleanup(func() { m.p.kill(); unmount(dir) })
	waitMounted(p, dir, time.Minute)
	return m
}

// vfsStats is the part of rclone's `rc vfs/stats` answer the bench reads.
type vfsStats struct {
	DiskCache struct {
		UploadsInProgress int `json:"uploadsInProgress"`
		UploadsQueued     int `json:"uploadsQueued"`
	} `json:"diskCache"`
}

// waitStored waits until rclone's VFS cache has no upload in progress or
// queued (asked every 50 ms through rc vfs/stats).
func (t *rcloneTool) waitStored(m *mount, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Post("http://"+m.rcAddr+"/vfs/stats", "application/json", strings.NewReader("{}"))
		check(err, "rclone rc vfs/stats")
		var st vfsStats
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		check(err, "decoding vfs/stats")
		if st.DiskCache.UploadsInProgress == 0 && st.DiskCache.UploadsQueued == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fail("rclone did not upload everything within %v:\n%s", timeout, m.p.tail(20))
}

func (t *rcloneTool) seed(ctx context.Context, path string, r io.ReaderAt, size int64) {
	t.az.upload(ctx, rcloneContainer, path, io.NewSectionReader(r, 0, size))
}

func (t *rcloneTool) seedSmall(ctx context.Context, path string, data []byte) error {
	return t.az.uploadSmall(ctx, rcloneContainer, path, data)
}

// direct is the baseline upload: `rclone copyto LOCAL peer:PATH`.
func (t *rcloneTool) direct(ctx context.Context, local, path string) time.Duration {
	return timed(func() {
		cmd := exec.CommandContext(ctx, "rclone", "copyto", local, "peer:"+rcloneContainer+"/"+path, "--config", t.config)
		cmd.Env = append(os.Environ(), t.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fail("rclone copyto: %v: %s", err, sigRe.ReplaceAllString(string(out), "${1}REDACTED"))
		}
	})
}

func (t *rcloneTool) downloadURL(_ context.Context, path string) string {
	return t.az.blobSASURL(rcloneContainer, path)
}

func (t *rcloneTool) stored(ctx context.Context, path string) (int64, [32]byte, bool) {
	return t.az.stored(ctx, rcloneContainer, path)
}

// freeAddr is a free loopback TCP address.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err, "finding a free port")
	defer ln.Close()
	return ln.Addr().String()
}

func (t *rcloneTool) list(ctx context.Context, prefix string) map[string]listed {
	return t.az.list(ctx, rcloneContainer, prefix)
}
