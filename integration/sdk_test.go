package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// requireSDK returns a Python interpreter that imports Seequent's official
// SDK (evo-files, evo-sdk-common): $EVOFS_SDK_PYTHON if set (.ci/run sets
// it), else a venv made in a temp dir from the archive in $EVOFS_SDK_DIR
// (default ../shared/sdk beside the repository) as its README says. Without
// one the test skips, but never under CI=true.
func requireSDK(t *testing.T) string {
	t.Helper()
	py, why := findSDK(t)
	if why == "" {
		return py
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the official Python SDK is required under CI: %s", why)
	}
	t.Skipf("skipping the official Python SDK test: %s", why)
	return ""
}

func findSDK(t *testing.T) (string, string) {
	if py := os.Getenv("EVOFS_SDK_PYTHON"); py != "" {
		if out, err := exec.Command(py, "-c", "import evo.files, evo.aio, aiohttp").CombinedOutput(); err != nil {
			return "", fmt.Sprintf("EVOFS_SDK_PYTHON=%s cannot import the SDK: %v\n%s", py, err, out)
		}
		return py, ""
	}
	dir := os.Getenv("EVOFS_SDK_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "sdk") // from integration/ in the module
	}
	archive := filepath.Join(dir, "evo-sdk-py.tgz")
	if _, err := os.Stat(archive); err != nil {
		return "", fmt.Sprintf("no SDK archive (set EVOFS_SDK_DIR or EVOFS_SDK_PYTHON): %v", err)
	}
	sys, err := exec.LookPath("python3")
	if err != nil {
		return "", "no python3 on PATH"
	}
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(sys, "-m", "venv", "--system-site-packages", venv).CombinedOutput(); err != nil {
		return "", fmt.Sprintf("python3 -m venv: %v\n%s", err, out)
	}
	py := filepath.Join(venv, "bin", "python")
	out, err := exec.Command(py, "-c", `import sysconfig; print(sysconfig.get_paths()["purelib"])`).Output()
	if err != nil {
		return "", fmt.Sprintf("venv site-packages: %v", err)
	}
	sp := strings.TrimSpace(string(out))
	if out, err := exec.Command("tar", "xzf", archive, "-C", sp).CombinedOutput(); err != nil {
		return "", fmt.Sprintf("unpack %s: %v\n%s", archive, err, out)
	}
	// Debian's python3-aiohttp and its dependencies, for an interpreter
	// that does not see dist-packages itself.
	for _, m := range []string{"aiohttp", "aiosignal", "async_timeout", "frozenlist", "multidict", "yarl"} {
		if _, err := os.Stat(filepath.Join(sp, m)); err == nil {
			continue
		}
		if src := filepath.Join("/usr/lib/python3/dist-packages", m); exists(src) {
			os.Symlink(src, filepath.Join(sp, m))
		}
	}
	if out, err := exec.Command(py, "-c", "import evo.files, evo.aio, aiohttp").CombinedOutput(); err != nil {
		return "", fmt.Sprintf("the SDK does not import (apt-get install python3-aiohttp?): %v\n%s", err, out)
	}
	return py, ""
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// loopback443 returns a random 127.x.y.z:443 that can be listened on now:
// the SDK drops the port of blob URLs, so the service must be on 443, and
// a random loopback address keeps parallel runs apart. Needs root (or
// CAP_NET_BIND_SERVICE): skipped without, but never under CI=true.
func loopback443(t *testing.T) string {
	t.Helper()
	for range 20 {
		ip := net.IPv4(127, byte(1+rand.N(254)), byte(rand.N(256)), byte(2+rand.N(250)))
		addr := net.JoinHostPort(ip.String(), "443")
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr
		}
		if os.Geteuid() != 0 && strings.Contains(err.Error(), "permission denied") {
			if os.Getenv("CI") == "true" {
				t.Fatalf("listening on port 443 is required under CI: %v", err)
			}
			t.Skipf("skipping the official Python SDK test: cannot listen on port 443: %v", err)
		}
	}
	t.Fatal("no free loopback address on port 443")
	return ""
}

// startServeTLS runs `evofs serve --tls` on addr and returns its CA file.
func startServeTLS(t *testing.T, addr, data, token string) (*evofsProc, string) {
	t.Helper()
	p := startEvofs(t, "serve", nil, "serve", "--tls", "--addr", addr, "--data", data, "--token", token)
	var banner, ca string
	if !eventually(t, 30*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			l := sc.Text()
			if s, ok := strings.CutPrefix(l, "evofs serve: CA certificate at "); ok {
				ca, _, _ = strings.Cut(s, " ")
			}
			if s, ok := strings.CutPrefix(l, "evofs serve: File API at "); ok {
				banner = s
			}
		}
		return banner != "" || p.exited()
	}) || banner == "" {
		t.Fatalf("serve printed no banner (exited: %v)", p.exited())
	}
	if banner != "https://"+addr || ca == "" {
		t.Fatalf("banner %q and CA %q, want https://%s and a CA file", banner, ca, addr)
	}
	if fi, err := os.Stat(filepath.Join(filepath.Dir(ca), "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key beside %s: %v %v, want mode 0600", ca, fi, err)
	}
	return p, ca
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestOfficialPythonSDK drives Seequent's own Python client against
// `evofs serve --tls` (testdata/sdk_check.py: uploads small, multi-block
// and empty, new versions by path and by id, downloads compared by sha256,
// listing with paging and the name filter, versions, a version by id,
// delete, list deleted, restore, health), then moves one file each way
// between the SDK and a real mount of the same service.
func TestOfficialPythonSDK(t *testing.T) {
	py := requireSDK(t)
	addr := loopback443(t)
	host, _, _ := net.SplitHostPort(addr)
	const token = "sdk-test-token"
	org, ws := uuid.New(), uuid.New()
	_, ca := startServeTLS(t, addr, t.TempDir(), token)
	script, err := filepath.Abs(filepath.Join("testdata", "sdk_check.py"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	sdk := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, append([]string{script}, args...)...)
		cmd.Dir = work
		cmd.Env = childEnv(t, "SSL_CERT_FILE="+ca, "EVO_HUB=https://"+host, "EVO_ORG="+org.String(),
			"EVO_WORKSPACE="+ws.String(), "EVO_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := sdk("suite", work); err != nil || !strings.HasSuffix(out, "ok") {
		t.Fatalf("SDK suite: %v\n%s", err, out)
	}

	// A real mount of the same service, trusting the CA by --ca-file only.
	requireFUSE(t)
	mp, cacheDir := t.TempDir(), t.TempDir()
	m := startEvofs(t, "mount", []string{"EVO_TOKEN=" + token}, "mount", "--host", "https://"+host, "--ca-file", ca,
		"--org", org.String(), "--workspace", ws.String(), "--cache-dir", cacheDir,
		"--poll-interval", "1s", "--write-back-delay", "0s", mp)
	m.mountpoint = mp
	m.waitMounted()

	// SDK → mount.
	in := randomBytes(61, 6<<20+3)
	src := filepath.Join(work, "to-mount.bin")
	if err := os.WriteFile(src, in, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := sdk("upload", "cross/from-sdk.bin", src); err != nil {
		t.Fatalf("SDK upload: %v\n%s", err, out)
	}
	var last string
	if !eventually(t, 60*time.Second, func() bool {
		got, err := os.ReadFile(filepath.Join(mp, "cross", "from-sdk.bin"))
		last = fmt.Sprintf("%d bytes, %v", len(got), err)
		return err == nil && sha256hex(got) == sha256hex(in)
	}) {
		t.Fatalf("the SDK's upload never read back exactly in the mount: %s", last)
	}

	// mount → SDK.
	out := randomBytes(62, 5<<20+11)
	writeIn(t, mp, "cross/from-mount.bin", out)
	dst := filepath.Join(work, "from-mount.bin")
	if !eventually(t, 60*time.Second, func() bool {
		got, err := sdk("download", "cross/from-mount.bin", dst)
		last = got
		return err == nil && strings.HasSuffix(got, sha256hex(out))
	}) {
		t.Fatalf("the mount's file never downloaded exactly through the SDK: %s", tail(last, 2000))
	}
}
