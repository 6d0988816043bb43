package emulator

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// tlsServer serves a fresh Server over HTTPS with the LocalCA in dir and
// returns a client trusting only that CA, and the base URL by host name.
func tlsServer(t *testing.T, dir string) (*http.Client, string) {
	t.Helper()
	srv, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, caFile, err := ListenTLS(raw, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the CA file")
	}
	cl := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(cl.CloseIdleConnections)
	_, port, _ := net.SplitHostPort(raw.Addr().String())
	return cl, "https://localhost:" + port
}

func TestLocalCACreatedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca, err := OpenLocalCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v, want mode 0600", fi, err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("CA dir: %v %v, want mode 0700", di, err)
	}
	first, _ := os.ReadFile(ca.CertFile)
	again, err := OpenLocalCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(again.CertFile); !bytes.Equal(first, second) || !again.cert.Equal(ca.cert) {
		t.Fatal("a second open made another CA")
	}
	// Half a CA is an error, not silently replaced.
	os.Remove(filepath.Join(dir, caKeyFile))
	if _, err := OpenLocalCA(dir); err == nil || !strings.Contains(err.Error(), caKeyFile) {
		t.Fatalf("open without the key: %v", err)
	}
}

// TestTLSWireFormatOfTheSDK checks, over HTTPS, what Seequent's Python SDK
// relies on: URLs with the scheme and host the client used, list answers
// with every paging field, string version ids, pre-signed URLs whose query
// the client re-encoded, raw &, =, + in paths, HEAD for the size, and
// uploads by 4 MiB Put Block + Put Block List (an empty file: an empty list).
func TestTLSWireFormatOfTheSDK(t *testing.T) {
	cl, base := tlsServer(t, filepath.Join(t.TempDir(), "tls"))
	files := base + "/file/v2/orgs/" + uuid.NewString() + "/workspaces/" + uuid.NewString() + "/files"
	call := func(method, u string, body []byte, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, u, rd)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(u, files) {
			req.Header.Set("Authorization", "Bearer sdk-token")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	obj := func(b []byte) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		return m
	}
	// reencode is Python's urlencode(parse_qsl(query)): order kept, every
	// value decoded and escaped again (quote_plus).
	reencode := func(u string) string {
		t.Helper()
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range strings.Split(pu.RawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			dk, err1 := url.QueryUnescape(k)
			dv, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				t.Fatalf("query %q", pu.RawQuery)
			}
			out = append(out, url.QueryEscape(dk)+"="+url.QueryEscape(dv))
		}
		pu.RawQuery = strings.Join(out, "&")
		return pu.String()
	}

	// Uploads: a raw &, = and + in a segment name the file literally.
	const name = "a&b=c+d.bin"
	data := bytes.Repeat([]byte("0123456789abcdef"), (9<<20)/16+3) // 3 blocks of 4 MiB, the last short
	const block = 4 << 20
	for _, tc := range []struct {
		path string
		data []byte
	}{{"sdk/" + name, data}, {"sdk/empty.bin", nil}} {
		res, b := call("PUT", files+"/path/"+tc.path, nil)
		if res.StatusCode != 200 {
			t.Fatalf("upsert %s: %d %s", tc.path, res.StatusCode, b)
		}
		up := obj(b)
		if _, ok := up["version_id"].(string); !ok {
			t.Fatalf("upsert version_id %#v is not a string", up["version_id"])
		}
		upload := up["upload"].(string)
		if !strings.HasPrefix(upload, base+"/") {
			t.Fatalf("upload URL %q is not under %s", upload, base)
		}
		upload = reencode(upload)
		var ids []string
		for off := 0; off < len(tc.data); off += block {
			id := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%032d", off)))
			ids = append(ids, "<Latest>"+id+"</Latest>")
			u := upload + "&comp=block&blockid=" + url.QueryEscape(id)
			if res, b := call("PUT", u, tc.data[off:min(off+block, len(tc.data))]); res.StatusCode != 201 {
				t.Fatalf("put block at %d: %d %s", off, res.StatusCode, b)
			}
		}
		list := `<?xml version="1.0" encoding="utf-8"?><BlockList>` + strings.Join(ids, "") + `</BlockList>`
		if res, b := call("PUT", upload+"&comp=blocklist", []byte(list), "Content-Type", "application/xml"); res.StatusCode != 201 {
			t.Fatalf("put block list of %s: %d %s", tc.path, res.StatusCode, b)
		}
	}

	// The file by path: its name, string version, https URLs on our host.
	var meta map[string]any
	if !eventuallyOK(func() bool {
		res, b := call("GET", files+"/path/sdk/"+name, nil)
		meta = map[string]any{}
		json.Unmarshal(b, &meta)
		return res.StatusCode == 200
	}) {
		t.Fatalf("%s never became visible", name)
	}
	if meta["name"] != name || meta["path"] != "/sdk/" {
		t.Fatalf("name %v path %v, want %s in /sdk/", meta["name"], meta["path"], name)
	}
	if _, ok := meta["version_id"].(string); !ok {
		t.Fatalf("version_id %#v is not a string", meta["version_id"])
	}
	dl := meta["download"].(string)
	for _, u := range []string{dl, meta["self"].(string)} {
		if !strings.HasPrefix(u, base+"/") {
			t.Fatalf("URL %q is not under %s", u, base)
		}
	}
	// HEAD gives the size and says ranges work; the bytes come back whole.
	dl = reencode(dl)
	res, _ := call("HEAD", dl, nil)
	if res.StatusCode != 200 || res.Header.Get("Accept-Ranges") != "bytes" || res.Header.Get("Content-Length") != fmt.Sprint(len(data)) {
		t.Fatalf("HEAD: %d Accept-Ranges %q Content-Length %q", res.StatusCode, res.Header.Get("Accept-Ranges"), res.Header.Get("Content-Length"))
	}
	res, got := call("GET", dl, nil, "Range", fmt.Sprintf("bytes=0-%d", len(data)-1))
	if res.StatusCode != 206 || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("ranged GET: %d, %d bytes, sha256 differs: %v", res.StatusCode, len(got), sha256.Sum256(got) != sha256.Sum256(data))
	}

	// Versions carry link, name, path and size; the empty file has size 0.
	res, b := call("GET", files+"/"+meta["file_id"].(string)+"?include_versions=true", nil)
	if res.StatusCode != 200 {
		t.Fatalf("get by id: %d %s", res.StatusCode, b)
	}
	vs, _ := obj(b)["versions"].([]any)
	if len(vs) != 1 {
		t.Fatalf("versions %v", vs)
	}
	v := vs[0].(map[string]any)
	if _, ok := v["version_id"].(string); !ok || v["name"] != name || v["path"] != "/sdk/" || v["size"] != float64(len(data)) ||
		!strings.HasPrefix(v["link"].(string), base+"/") {
		t.Fatalf("version %v", v)
	}

	// Lists always carry the paging fields and links.self, even when empty;
	// every file its etag and links.self.
	for _, q := range []string{"?limit=1", "?offset=50", "?file_name=nothing-like-it"} {
		res, b := call("GET", files+q, nil)
		if res.StatusCode != 200 {
			t.Fatalf("list %s: %d %s", q, res.StatusCode, b)
		}
		l := obj(b)
		for _, k := range []string{"count", "limit", "offset", "total"} {
			if _, ok := l[k].(float64); !ok {
				t.Fatalf("list %s: %s is %#v", q, k, l[k])
			}
		}
		if self, _ := l["links"].(map[string]any)["self"].(string); !strings.HasPrefix(self, base+"/") {
			t.Fatalf("list %s: links.self %q", q, self)
		}
		for _, f := range l["files"].([]any) {
			fm := f.(map[string]any)
			_, isStr := fm["version_id"].(string)
			if fm["etag"] == "" || fm["etag"] == nil || !isStr || fm["links"].(map[string]any)["self"] == "" {
				t.Fatalf("list %s: file %v", q, fm)
			}
		}
	}
	if l := func() map[string]any { _, b := call("GET", files+"?file_name=empty.bin", nil); return obj(b) }(); l["total"] != float64(1) {
		t.Fatalf("the empty file is not listed: %v", l)
	} else if f := l["files"].([]any)[0].(map[string]any); f["size"] != float64(0) {
		t.Fatalf("empty file listed with size %v", f["size"])
	}
}

// eventuallyOK polls cond for up to 20 s.
func eventuallyOK(cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
