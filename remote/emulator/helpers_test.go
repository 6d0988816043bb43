package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type tclient struct {
	t     *testing.T
	ts    *TestServer
	token string
}

func newClient(t *testing.T, o Options) *tclient {
	t.Helper()
	return &tclient{t: t, ts: NewTestServer(t, o), token: TestToken}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

// do sends a request; body may be nil. Redirects are not followed.
func (c *tclient) do(method, u string, body []byte, hdr map[string]string) resp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 60 * time.Second}
	res, err := cl.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

// api calls a File API route relative to the workspace's files URL ("" = list).
func (c *tclient) api(method, rel string) resp {
	c.t.Helper()
	u := c.ts.FilesURL()
	if rel != "" {
		u += "/" + rel
	}
	return c.do(method, u, nil, map[string]string{"Authorization": "Bearer " + c.token})
}

func escPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// upload registers p by path and Put Blobs data; returns file id and version.
func (c *tclient) upload(p string, data []byte) (string, string) {
	c.t.Helper()
	r := c.api("PUT", "path/"+escPath(p))
	if r.status != 200 {
		c.t.Fatalf("upsert %s: %d %s", p, r.status, r.body)
	}
	m := r.json(c.t)
	put := c.do("PUT", m["upload"].(string), data, map[string]string{"x-ms-blob-type": "BlockBlob"})
	if put.status != 201 {
		c.t.Fatalf("put blob: %d %s", put.status, put.body)
	}
	return m["file_id"].(string), m["version_id"].(string)
}

func wantProblem(t *testing.T, r resp, status int, suffix string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	ct := r.header.Get("Content-Type")
	if ct != "application/problem+json" && ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	m := r.json(t)
	if m["type"] != problemPrefix+suffix {
		t.Fatalf("type %v, want %s", m["type"], problemPrefix+suffix)
	}
	if m["title"] == nil || m["title"] == "" {
		t.Fatalf("no title: %s", r.body)
	}
	if n, _ := m["status"].(json.Number).Int64(); int(n) != status {
		t.Fatalf("body status %v", m["status"])
	}
	if _, ok := m["detail"]; !ok {
		t.Fatalf("no detail key: %s", r.body)
	}
}

func wantBlobError(t *testing.T, r resp, status int, code string) {
	t.Helper()
	if r.status != status || r.header.Get("x-ms-error-code") != code {
		t.Fatalf("got %d %q, want %d %s: %s", r.status, r.header.Get("x-ms-error-code"), status, code, r.body)
	}
	if len(r.body) > 0 && !bytes.Contains(r.body, []byte("<Code>"+code+"</Code>")) {
		t.Fatalf("body %s lacks code %s", r.body, code)
	}
}
