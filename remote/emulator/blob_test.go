package emulator

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func blockURL(u, id string) string {
	return u + "&comp=block&blockid=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(id)))
}

func blockList(items ...string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><BlockList>`)
	for _, it := range items {
		kind, id, _ := strings.Cut(it, ":")
		fmt.Fprintf(&b, "<%s>%s</%s>", kind, base64.StdEncoding.EncodeToString([]byte(id)), kind)
	}
	b.WriteString("</BlockList>")
	return []byte(b.String())
}

func TestBlobOps(t *testing.T) {
	c := newClient(t, Options{MaxBlobSize: 1 << 20})
	up, fid, vid := c.register("b.bin")
	xml := map[string]string{"Content-Type": "application/xml"}

	wantBlobError(t, c.do("PUT", up, []byte("x"), nil), 400, "MissingRequiredHeader")
	wantBlobError(t, c.do("PUT", up, []byte("x"), map[string]string{"x-ms-blob-type": "AppendBlob"}), 400, "InvalidHeaderValue")
	wantBlobError(t, c.do("PUT", up, make([]byte, 1<<20+1), map[string]string{"x-ms-blob-type": "BlockBlob"}), 413, "RequestBodyTooLarge")
	wantBlobError(t, c.do("PUT", up+"&comp=block&blockid=%21%21", []byte("x"), nil), 400, "InvalidQueryParameterValue")
	wantBlobError(t, c.do("PUT", up, []byte("x"), map[string]string{"x-ms-blob-type": "BlockBlob", "Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="}), 400, "Md5Mismatch")
	// Chunked body: no Content-Length.
	req, _ := http.NewRequest("PUT", up, struct{ *bytes.Reader }{bytes.NewReader([]byte("abc"))})
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 411 || res.Header.Get("x-ms-error-code") != "MissingContentLengthHeader" {
		t.Fatalf("chunked: %d %v", res.StatusCode, res.Header)
	}

	// Blocks: same-length ids, replace, Latest/Uncommitted, unknown id, unlisted dropped.
	for id, body := range map[string]string{"b0": "AAAA", "b1": "bbbb", "b2": "zz", "b9": "unused"} {
		if r := c.do("PUT", blockURL(up, id), []byte(body), nil); r.status != 201 || r.header.Get("x-ms-request-id") == "" {
			t.Fatalf("put block %s: %d %s", id, r.status, r.body)
		}
	}
	if r := c.do("PUT", blockURL(up, "b1"), []byte("BBBB"), nil); r.status != 201 {
		t.Fatal("replace block")
	}
	wantBlobError(t, c.do("PUT", blockURL(up, "longer"), []byte("x"), nil), 400, "InvalidBlobOrBlock")
	wantBlobError(t, c.do("PUT", up+"&comp=blocklist", blockList("Latest:b0", "Latest:b7"), xml), 400, "InvalidBlockList")
	wantBlobError(t, c.do("PUT", up+"&comp=blocklist", blockList("Committed:b0"), xml), 400, "InvalidBlockList")
	wantBlobError(t, c.do("PUT", up+"&comp=blocklist", []byte("<nope"), xml), 400, "InvalidXmlDocument")
	// Not committed yet: reads find nothing.
	wantProblem(t, c.api("GET", fid), 404, "/files/not-found")
	r := c.do("PUT", up+"&comp=blocklist", blockList("Latest:b0", "Uncommitted:b1", "Latest:b2"), map[string]string{"Content-Type": "text/plain; charset=UTF-8"})
	if r.status != 201 || r.header.Get("ETag") == "" || r.header.Get("Last-Modified") == "" {
		t.Fatalf("block list: %d %s", r.status, r.body)
	}
	if _, err := http.ParseTime(r.header.Get("Last-Modified")); err != nil {
		t.Fatal(err)
	}
	dl, meta := c.downloadURL("b.bin")
	if meta["version_id"] != vid || meta["etag"] != r.header.Get("ETag") {
		t.Fatalf("meta %v", meta)
	}
	full := c.do("GET", dl, nil, nil)
	if full.status != 200 || string(full.body) != "AAAABBBBzz" || full.header.Get("Accept-Ranges") != "bytes" ||
		full.header.Get("x-ms-blob-type") != "BlockBlob" || full.header.Get("Content-Type") != "application/octet-stream" ||
		full.header.Get("x-ms-version") != "2023-08-03" || !strings.Contains(full.header.Get("Content-Disposition"), "b.bin") {
		t.Fatalf("get %d %q %v", full.status, full.body, full.header)
	}
	// Retired after commit.
	wantBlobError(t, c.do("PUT", blockURL(up, "b0"), []byte("x"), nil), 403, "AuthenticationFailed")
	wantBlobError(t, c.do("PUT", up, []byte("x"), map[string]string{"x-ms-blob-type": "BlockBlob"}), 403, "AuthenticationFailed")

	// Ranges.
	for _, tc := range []struct {
		hdr     map[string]string
		status  int
		body    string
		crange  string
		errCode string
	}{
		{map[string]string{"Range": "bytes=2-5"}, 206, "AABB", "bytes 2-5/10", ""},
		{map[string]string{"Range": "bytes=3-8"}, 206, "ABBBBz", "bytes 3-8/10", ""},
		{map[string]string{"Range": "bytes=8-"}, 206, "zz", "bytes 8-9/10", ""},
		{map[string]string{"Range": "bytes=8-100"}, 206, "zz", "bytes 8-9/10", ""},
		{map[string]string{"Range": "bytes=0-0", "x-ms-range": "bytes=9-9"}, 206, "z", "bytes 9-9/10", ""},
		{map[string]string{"x-ms-range": "bytes=10-"}, 416, "", "", "InvalidRange"},
		{map[string]string{"Range": "bytes=10-20"}, 416, "", "", "InvalidRange"},
		{map[string]string{"Range": "chars=1-2"}, 400, "", "", "InvalidHeaderValue"},
	} {
		r := c.do("GET", dl, nil, tc.hdr)
		if tc.errCode != "" {
			wantBlobError(t, r, tc.status, tc.errCode)
			continue
		}
		if r.status != tc.status || string(r.body) != tc.body || r.header.Get("Content-Range") != tc.crange || r.header.Get("Content-Length") != fmt.Sprint(len(tc.body)) {
			t.Fatalf("%v: %d %q %v", tc.hdr, r.status, r.body, r.header)
		}
	}
	h := c.do("HEAD", dl, nil, nil)
	if h.status != 200 || h.header.Get("Content-Length") != "10" || h.header.Get("ETag") != meta["etag"] || len(h.body) != 0 {
		t.Fatalf("head %d %v", h.status, h.header)
	}

	// Permissions, tampering, expiry.
	wantBlobError(t, c.do("GET", up, nil, nil), 403, "AuthorizationPermissionMismatch")
	wantBlobError(t, c.do("PUT", dl, []byte("x"), map[string]string{"x-ms-blob-type": "BlockBlob"}), 403, "AuthorizationPermissionMismatch")
	wantBlobError(t, c.do("GET", strings.Replace(dl, "sp=rt", "sp=rwt", 1), nil, nil), 403, "AuthenticationFailed")
	u, _ := url.Parse(dl)
	q := u.Query()
	q.Set("se", "2100-01-01T00:00:00Z")
	u.RawQuery = q.Encode()
	wantBlobError(t, c.do("GET", u.String(), nil, nil), 403, "AuthenticationFailed")
	wantBlobError(t, c.do("GET", strings.Replace(dl, "/blob/", "/blob//", 1), nil, nil), 403, "AuthenticationFailed")
	sigless := dl[:strings.Index(dl, "&sig=")]
	wantBlobError(t, c.do("GET", sigless, nil, nil), 403, "AuthenticationFailed")
	hd := c.do("HEAD", sigless, nil, nil)
	if hd.status != 403 || hd.header.Get("x-ms-error-code") != "AuthenticationFailed" || len(hd.body) != 0 {
		t.Fatalf("head error: %d %v", hd.status, hd.header)
	}

	// Empty block list → zero-length blob.
	up2, _, _ := c.register("empty.bin")
	if r := c.do("PUT", up2+"&comp=blocklist", blockList(), xml); r.status != 201 {
		t.Fatalf("empty list %d %s", r.status, r.body)
	}
	dl2, m2 := c.downloadURL("empty.bin")
	if g := c.do("GET", dl2, nil, nil); g.status != 200 || len(g.body) != 0 || m2["size"].(interface{ String() string }).String() != "0" {
		t.Fatalf("empty blob %d %v", g.status, m2)
	}
	wantBlobError(t, c.do("GET", dl2, nil, map[string]string{"Range": "bytes=0-"}), 416, "InvalidRange")
	// Put Blob replaces staged blocks.
	up3, _, _ := c.register("mixed.bin")
	c.do("PUT", blockURL(up3, "x"), []byte("block"), nil)
	if r := c.do("PUT", up3, []byte("whole"), map[string]string{"x-ms-blob-type": "BlockBlob"}); r.status != 201 {
		t.Fatal("put blob over blocks")
	}
	wantBlobError(t, c.do("PUT", up3+"&comp=blocklist", blockList("Latest:x"), xml), 403, "AuthenticationFailed")
}

func TestURLExpiry(t *testing.T) {
	clk := newFakeClock()
	c := newClient(t, Options{Now: clk.Now, URLTTL: time.Minute})
	up, fid, vid := c.register("e.bin")
	if !strings.Contains(up, "sp=wt") || !strings.Contains(up, "sv=2023-08-03") || !strings.Contains(up, "sr=b") {
		t.Fatalf("upload url %s", up)
	}
	if r := c.do("PUT", blockURL(up, "0"), []byte("abc"), nil); r.status != 201 {
		t.Fatal("block")
	}
	clk.Advance(61 * time.Second)
	r := c.do("PUT", blockURL(up, "1"), []byte("def"), nil)
	wantBlobError(t, r, 403, "AuthenticationFailed")
	if !bytes.Contains(r.body, []byte("<AuthenticationErrorDetail>Signature not valid in the specified time frame")) {
		t.Fatalf("detail: %s", r.body)
	}
	// Renew with version_id: staged blocks survive.
	rr := c.api("PUT", fid+"?version_id="+vid).json(t)
	up2 := rr["upload"].(string)
	if up2 == up {
		t.Fatal("same url after renewal")
	}
	c.do("PUT", blockURL(up2, "1"), []byte("def"), nil)
	if r := c.do("PUT", up2+"&comp=blocklist", blockList("Latest:0", "Latest:1"), nil); r.status != 201 {
		t.Fatalf("commit %d %s", r.status, r.body)
	}
	data, _, _, err := c.ts.ReadFile(c.ts.Org, c.ts.Workspace, "e.bin")
	if err != nil || string(data) != "abcdef" {
		t.Fatalf("%q %v", data, err)
	}
	c.ts.SetURLTTL(time.Hour)
	dl, _ := c.downloadURL("e.bin")
	clk.Advance(59 * time.Minute)
	if r := c.do("GET", dl, nil, nil); r.status != 200 {
		t.Fatal("URL expired early")
	}
	clk.Advance(2 * time.Minute)
	wantBlobError(t, c.do("GET", dl, nil, nil), 403, "AuthenticationFailed")
	// Uncommitted uploads expire after 7 days.
	_, _, vid2 := c.register("e.bin")
	clk.Advance(8 * 24 * time.Hour)
	wantProblem(t, c.api("PUT", "path/e.bin?version_id="+vid2), 404, "/files/not-found")
}
