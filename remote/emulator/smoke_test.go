package emulator

import (
	"bytes"
	"testing"
)

func TestUploadGetDownload(t *testing.T) {
	c := newClient(t, Options{})
	if r := c.api("GET", "path/A/b.txt"); r.status != 404 {
		t.Fatalf("before: %d", r.status)
	}
	r := c.api("PUT", "path/A/b.txt")
	if r.status != 200 {
		t.Fatalf("upsert %d %s", r.status, r.body)
	}
	m := r.json(t)
	if !bytes.Contains(r.body, []byte(`"version_id":"`)) {
		t.Fatalf("version_id not a string: %s", r.body)
	}
	// Invisible until committed.
	wantProblem(t, c.api("GET", "path/A/b.txt"), 404, "/files/not-found")
	data := []byte("hello world")
	put := c.do("PUT", m["upload"].(string), data, map[string]string{"x-ms-blob-type": "BlockBlob"})
	if put.status != 201 || put.header.Get("ETag") == "" || put.header.Get("Content-MD5") == "" || put.header.Get("Last-Modified") == "" {
		t.Fatalf("put blob %d %v %s", put.status, put.header, put.body)
	}
	g := c.api("GET", "path/a/B.TXT")
	if g.status != 200 {
		t.Fatalf("get %d %s", g.status, g.body)
	}
	gm := g.json(t)
	if gm["name"] != "b.txt" || gm["path"] != "/A/" || gm["version_id"] != m["version_id"] || gm["file_id"] != m["file_id"] {
		t.Fatalf("meta %s", g.body)
	}
	d := c.do("GET", gm["download"].(string), nil, nil)
	if d.status != 200 || !bytes.Equal(d.body, data) {
		t.Fatalf("download %d %q", d.status, d.body)
	}
	got, _, _, err := c.ts.ReadFile(c.ts.Org, c.ts.Workspace, "/a/b.txt")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile %q %v", got, err)
	}
}
