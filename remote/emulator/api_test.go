package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestAuth(t *testing.T) {
	alice := User{ID: uuid.New(), Name: "Alice", Email: "a@example.com"}
	vic := User{ID: uuid.New(), Name: "Vic"}
	c := newClient(t, Options{Tokens: map[string]Grant{"alice": {alice, RoleOwner}, "vic": {vic, RoleViewer}}})
	u := c.ts.FilesURL()
	wantProblem(t, c.do("GET", u, nil, nil), 401, "/auth/missing-token")
	wantProblem(t, c.do("GET", u, nil, map[string]string{"Authorization": "Basic eDp5"}), 401, "/auth/missing-token")
	wantProblem(t, c.do("GET", u, nil, map[string]string{"Authorization": "Bearer "}), 401, "/auth/missing-token")
	wantProblem(t, c.do("GET", u, nil, map[string]string{"Authorization": "Bearer nope"}), 401, "/auth/invalid-token")
	if r := c.do("GET", u, nil, map[string]string{"Authorization": "Bearer vic"}); r.status != 200 {
		t.Fatalf("viewer list: %d", r.status)
	}
	r := c.do("PUT", u+"/path/x.txt", nil, map[string]string{"Authorization": "Bearer vic"})
	wantProblem(t, r, 403, "/auth/insufficient-role")
	m := r.json(t)
	if m["your_role"] != "viewer" || fmt.Sprint(m["permitted_roles"]) != "[editor owner]" {
		t.Fatalf("403 body %s", r.body)
	}
	wantProblem(t, c.do("DELETE", u+"/path/x.txt", nil, map[string]string{"Authorization": "Bearer vic"}), 403, "/auth/insufficient-role")
	// The test token is added as an editor; alice's identity is reported.
	c.token = "alice"
	c.upload("x.txt", []byte("x"))
	g := c.api("GET", "path/x.txt").json(t)
	if g["created_by"].(map[string]any)["name"] != "Alice" {
		t.Fatalf("created_by %v", g["created_by"])
	}
	c.token = TestToken
	if r := c.api("GET", "path/x.txt"); r.status != 200 {
		t.Fatalf("test token: %d", r.status)
	}
	// Empty token table: any bearer token is the local editor.
	c2 := newClient(t, Options{})
	c2.token = "whatever"
	c2.upload("y.txt", []byte("y"))
	if g := c2.api("GET", "path/y.txt").json(t); g["created_by"].(map[string]any)["id"] != LocalUser.ID.String() {
		t.Fatalf("local user: %v", g["created_by"])
	}
}

func TestValidationAndRoutes(t *testing.T) {
	c := newClient(t, Options{})
	h := map[string]string{"Authorization": "Bearer t"}
	wantProblem(t, c.do("GET", c.ts.URL+"/file/v2/orgs/not-a-uuid/workspaces/"+c.ts.Workspace.String()+"/files", nil, h), 422, "/validation")
	wantProblem(t, c.do("GET", c.ts.URL+"/file/v2/orgs/"+c.ts.Org.String()+"/workspaces/xyz/files", nil, h), 422, "/validation")
	wantProblem(t, c.api("GET", "1234"), 422, "/validation")
	wantProblem(t, c.api("GET", "path/a.txt?version_id=abc"), 422, "/validation")
	wantProblem(t, c.api("GET", "path/a.txt?include_versions=maybe"), 422, "/validation")
	wantProblem(t, c.api("GET", "?limit=0"), 422, "/validation")
	wantProblem(t, c.api("GET", "?limit=5001"), 422, "/validation")
	wantProblem(t, c.api("GET", "?offset=-1"), 422, "/validation")
	wantProblem(t, c.api("GET", "?order_by=name"), 422, "/validation")
	wantProblem(t, c.api("GET", "?created_at=yesterday"), 422, "/validation")
	wantProblem(t, c.api("GET", "?file_name=a/b"), 400, "/files/invalid-path")
	wantProblem(t, c.api("GET", uuid.NewString()), 404, "/files/not-found")
	wantProblem(t, c.api("DELETE", uuid.NewString()), 404, "/files/not-found")
	wantProblem(t, c.api("PUT", uuid.NewString()), 404, "/files/not-found")
	wantProblem(t, c.api("DELETE", "path/nothing.txt"), 404, "/files/not-found")
	// Health needs no auth.
	r := c.do("GET", c.ts.URL+"/file/health_check", nil, nil)
	if r.status != 200 || string(r.body) != "pass" {
		t.Fatalf("health %d %q", r.status, r.body)
	}
	r = c.do("GET", c.ts.URL+"/file/health_check?full=true&check_dependencies=True", nil, nil)
	if m := r.json(t); r.status != 200 || m["status"] != "pass" || m["dependencies"] == nil {
		t.Fatalf("full health %d %s", r.status, r.body)
	}
}

func TestPathRules(t *testing.T) {
	c := newClient(t, Options{})
	long := strings.Repeat("n", 256)
	for _, p := range []string{"", "/", "a/", "a//b", "a/./b", "a/../b", "..", "a%2Fb", "a%2fb/c", "%20a", "a%20", "a/b%20/c",
		"a%00b", "a%1Fb", "a%7Fb", long, strings.Repeat("d/", 2100) + "f"} {
		wantProblem(t, c.api("PUT", "path/"+p), 400, "/files/invalid-path")
		wantProblem(t, c.api("GET", "path/"+p), 400, "/files/invalid-path")
	}
	// Everything else is a valid name, decoded exactly once.
	weird := `we ird#?%&+\:*"<>|ü.txt`
	c.upload("Fold er/"+weird, []byte("w"))
	g := c.api("GET", "path/"+escPath("fold ER/"+strings.ToUpper(weird)))
	if g.status != 200 {
		t.Fatalf("get weird %d %s", g.status, g.body)
	}
	m := g.json(t)
	if m["name"] != weird || m["path"] != "/Fold er/" {
		t.Fatalf("weird meta %s", g.body)
	}
	c.upload("a%41.txt", []byte("p")) // sent as a%2541.txt, decoded once
	if r := c.api("GET", "path/a%2541.txt"); r.status != 200 || r.json(t)["name"] != "a%41.txt" {
		t.Fatalf("double decode: %d %s", r.status, r.body)
	}
	c.upload(strings.Repeat("n", 255), nil)
}

func TestCaseAndFolders(t *testing.T) {
	c := newClient(t, Options{})
	fid1, v1 := c.upload("Dir/File.txt", []byte("one"))
	fid2, v2 := c.upload("dir/file.TXT", []byte("two"))
	if fid1 != fid2 || v2 <= v1 || len(v1) != len(v2) {
		t.Fatalf("case-insensitive upsert: %s/%s %s/%s", fid1, fid2, v1, v2)
	}
	g := c.api("GET", "path/DIR/FILE.txt").json(t)
	if g["name"] != "File.txt" || g["path"] != "/Dir/" || g["version_id"] != v2 {
		t.Fatalf("display case: %v", g)
	}
	c.upload("DIR/Other.txt", nil)
	if g := c.api("GET", "path/dir/other.txt").json(t); g["path"] != "/Dir/" || g["name"] != "Other.txt" || g["size"].(json.Number).String() != "0" {
		t.Fatalf("folder case: %v", g)
	}
	c.upload("/root.txt", []byte("r"))
	if g := c.api("GET", "path/root.txt").json(t); g["path"] != "/" {
		t.Fatalf("root: %v", g)
	}
}

func TestVersions(t *testing.T) {
	c := newClient(t, Options{})
	fid, v1 := c.upload("v.txt", []byte("first"))
	_, v2 := c.upload("v.txt", []byte("second!"))
	g := c.api("GET", fid+"?include_versions=true")
	m := g.json(t)
	if m["version_id"] != v2 || m["size"].(json.Number).String() != "7" {
		t.Fatalf("latest %s", g.body)
	}
	vs := m["versions"].([]any)
	if len(vs) != 2 || vs[0].(map[string]any)["version_id"] != v1 || vs[1].(map[string]any)["version_id"] != v2 {
		t.Fatalf("versions %v", vs)
	}
	for _, k := range []string{"version_id", "created_at", "created_by", "file_id", "name", "path", "size", "link"} {
		if _, ok := vs[0].(map[string]any)[k]; !ok {
			t.Fatalf("version lacks %s", k)
		}
	}
	if m2 := c.api("GET", fid).json(t); m2["versions"] != nil {
		t.Fatalf("versions without include_versions: %v", m2["versions"])
	}
	old := c.api("GET", "path/v.txt?version_id="+v1).json(t)
	if old["version_id"] != v1 {
		t.Fatalf("pinned %v", old)
	}
	if d := c.do("GET", old["download"].(string), nil, nil); string(d.body) != "first" {
		t.Fatalf("old content %q", d.body)
	}
	wantProblem(t, c.api("GET", fid+"?version_id=1"), 404, "/files/not-found")
	for _, k := range []string{"name", "path", "file_id", "version_id", "size", "etag", "created_at", "created_by", "modified_at",
		"modified_by", "download", "self"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("metadata lacks %s: %s", k, g.body)
		}
	}
	if !strings.HasPrefix(m["etag"].(string), `"`) || !strings.HasSuffix(m["created_at"].(string), "Z") {
		t.Fatalf("etag/time format: %v %v", m["etag"], m["created_at"])
	}

	// Pending versions: resume with version_id, the old one stays visible.
	r := c.api("PUT", "path/v.txt").json(t)
	v3 := r["version_id"].(string)
	if g := c.api("GET", "path/v.txt").json(t); g["version_id"] != v2 {
		t.Fatalf("pending version visible: %v", g["version_id"])
	}
	again := c.api("PUT", "path/v.txt?version_id="+v3)
	if again.status != 200 || again.json(t)["version_id"] != v3 {
		t.Fatalf("resume %d %s", again.status, again.body)
	}
	if r := c.api("PUT", fid+"?version_id="+v3); r.status != 200 {
		t.Fatalf("resume by id %d", r.status)
	}
	wantProblem(t, c.api("PUT", "path/v.txt?version_id="+v1), 400, "/files/no-file-upload-in-progress")
	wantProblem(t, c.api("PUT", fid+"?version_id="+v1), 400, "/files/no-file-upload-in-progress")
	wantProblem(t, c.api("PUT", "path/v.txt?version_id=12345"), 404, "/files/not-found")
	wantProblem(t, c.api("PUT", "path/none.txt?version_id="+v3), 404, "/files/not-found")
	// Version order follows ids, not commit order: commit v4 then v3.
	r4 := c.api("PUT", fid).json(t)
	c.do("PUT", r4["upload"].(string), []byte("four"), map[string]string{"x-ms-blob-type": "BlockBlob"})
	c.do("PUT", again.json(t)["upload"].(string), []byte("three"), map[string]string{"x-ms-blob-type": "BlockBlob"})
	if g := c.api("GET", fid).json(t); g["version_id"] != r4["version_id"] {
		t.Fatalf("latest = highest id: %v", g["version_id"])
	}

	// New files are invisible until their first commit; re-upserts reuse the id.
	n1 := c.api("PUT", "path/new.txt").json(t)
	n2 := c.api("PUT", "path/NEW.txt").json(t)
	if n1["file_id"] != n2["file_id"] {
		t.Fatal("reserved file id not reused")
	}
	wantProblem(t, c.api("GET", "path/new.txt"), 404, "/files/not-found")
	wantProblem(t, c.api("GET", n1["file_id"].(string)), 404, "/files/not-found")
	if l := c.api("GET", "").json(t); l["total"].(json.Number).String() != "1" {
		t.Fatalf("pending file listed: %v", l)
	}

	// Numeric version ids on request.
	cn := newClient(t, Options{NumericVersionIDs: true})
	rr := cn.api("PUT", "path/n.txt")
	if !bytes.Contains(rr.body, []byte(`"version_id":1`)) {
		t.Fatalf("numeric: %s", rr.body)
	}
}

func TestPublishDelayAndClock(t *testing.T) {
	clk := newFakeClock()
	c := newClient(t, Options{Now: clk.Now, PublishDelay: 2 * time.Second})
	fid, v1 := c.upload("p.txt", []byte("1"))
	wantProblem(t, c.api("GET", "path/p.txt"), 404, "/files/not-found")
	if l := c.api("GET", "").json(t); l["total"].(json.Number).String() != "0" {
		t.Fatal("listed before visible")
	}
	wantProblem(t, c.api("DELETE", fid), 404, "/files/not-found")
	clk.Advance(2 * time.Second)
	if g := c.api("GET", "path/p.txt").json(t); g["version_id"] != v1 {
		t.Fatalf("after delay %v", g)
	}
	_, v2 := c.upload("p.txt", []byte("2"))
	if g := c.api("GET", fid).json(t); g["version_id"] != v1 {
		t.Fatal("new version visible early")
	}
	clk.Advance(time.Second)
	if l := c.api("GET", "").json(t); l["files"].([]any)[0].(map[string]any)["version_id"] != v1 {
		t.Fatal("list/get disagree")
	}
	clk.Advance(time.Second)
	g := c.api("GET", fid).json(t)
	l := c.api("GET", "").json(t)
	if g["version_id"] != v2 || l["files"].([]any)[0].(map[string]any)["version_id"] != v2 {
		t.Fatal("list and get not switched together")
	}
	c.ts.SetPublishDelay(0)
	_, v3 := c.upload("p.txt", nil)
	if g := c.api("GET", fid).json(t); g["version_id"] != v3 {
		t.Fatal("delay 0")
	}
	// Direct writes are visible at once.
	c.ts.SetPublishDelay(time.Hour)
	_, v4, err := c.ts.PutFile(c.ts.Org, c.ts.Workspace, "p.txt", []byte("direct"))
	if err != nil {
		t.Fatal(err)
	}
	if g := c.api("GET", fid).json(t); g["version_id"] != v4 || g["modified_by"].(map[string]any)["id"] != OtherUser.ID.String() {
		t.Fatalf("PutFile %v", g)
	}
}

func TestDeleteRestore(t *testing.T) {
	c := newClient(t, Options{})
	fid, _ := c.upload("d/x.txt", []byte("x"))
	if r := c.api("DELETE", "path/D/X.txt"); r.status != 204 {
		t.Fatalf("delete %d", r.status)
	}
	wantProblem(t, c.api("GET", "path/d/x.txt"), 404, "/files/not-found")
	wantProblem(t, c.api("GET", fid), 410, "/files/gone")
	wantProblem(t, c.api("PUT", fid), 410, "/files/gone")
	wantProblem(t, c.api("DELETE", fid), 404, "/files/not-found")
	wantProblem(t, c.api("DELETE", "path/d/x.txt"), 404, "/files/not-found")
	g := c.api("GET", fid+"?deleted=true")
	m := g.json(t)
	if g.status != 200 || m["deleted_at"] == nil || m["deleted_by"] == nil {
		t.Fatalf("deleted=true: %s", g.body)
	}
	if d := c.do("GET", m["download"].(string), nil, nil); string(d.body) != "x" {
		t.Fatal("download of deleted file")
	}
	if l := c.api("GET", "").json(t); l["total"].(json.Number).String() != "0" {
		t.Fatal("deleted listed")
	}
	l := c.api("GET", "?deleted=True").json(t)
	if l["total"].(json.Number).String() != "1" || l["files"].([]any)[0].(map[string]any)["name"] != "x.txt" {
		t.Fatalf("deleted listing %v", l)
	}
	// Upsert on the deleted path → new file; restoring the old one conflicts.
	fid2, _ := c.upload("d/x.txt", []byte("y"))
	if fid2 == fid {
		t.Fatal("upsert on deleted path reused the id")
	}
	wantProblem(t, c.api("PUT", fid+"?deleted=false"), 409, "/files/already-exists")
	wantProblem(t, c.api("PUT", fid+"?deleted=false&version_id=1"), 400, "/bad-request")
	if r := c.api("DELETE", fid2); r.status != 204 {
		t.Fatal("delete by id")
	}
	if r := c.api("PUT", fid+"?deleted=False"); r.status != 204 {
		t.Fatalf("restore %d %s", r.status, r.body)
	}
	if g := c.api("GET", "path/d/x.txt").json(t); g["file_id"] != fid || g["deleted_at"] != nil {
		t.Fatalf("restored %v", g)
	}
	if r := c.api("PUT", fid+"?deleted=0"); r.status != 204 {
		t.Fatal("restore of live file")
	}
	if err := c.ts.DeleteFile(c.ts.Org, c.ts.Workspace, "d/x.txt"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c.ts.ReadFile(c.ts.Org, c.ts.Workspace, "d/x.txt"); err == nil {
		t.Fatal("ReadFile after DeleteFile")
	}
	// 303 switch.
	cs := newClient(t, Options{RestoreSeeOther: true})
	fid3, _ := cs.upload("s.txt", []byte("s"))
	cs.api("DELETE", fid3)
	r := cs.api("PUT", fid3+"?deleted=false")
	if r.status != 303 || r.header.Get("Location") == "" || r.json(t)["file_id"] != fid3 {
		t.Fatalf("303: %d %v %s", r.status, r.header, r.body)
	}
}

func TestListFiltersAndPaging(t *testing.T) {
	clk := newFakeClock()
	alice := User{ID: uuid.New(), Name: "Alice"}
	bob := User{ID: uuid.New(), Name: "Bob"}
	c := newClient(t, Options{Now: clk.Now, Tokens: map[string]Grant{"a": {alice, RoleEditor}, "b": {bob, RoleEditor}}})
	var ids []string
	for i := 0; i < 7; i++ {
		c.token = "a"
		if i%2 == 1 {
			c.token = "b"
		}
		fid, _ := c.upload(fmt.Sprintf("f/AllGold%02d.csv", i), []byte{byte(i)})
		ids = append(ids, fid)
		clk.Advance(time.Minute)
	}
	c.token = "b"
	c.upload("f/AllGold00.csv", []byte("mod")) // alice's file modified by bob
	t3 := clk.Now().Add(-4 * time.Minute)      // creation of file 3 (files at minutes 0..6, now at 7)

	total := func(q string) int {
		t.Helper()
		r := c.api("GET", "?"+q)
		if r.status != 200 {
			t.Fatalf("list %s: %d %s", q, r.status, r.body)
		}
		n, _ := r.json(t)["total"].(json.Number).Int64()
		return int(n)
	}
	cases := map[string]int{
		"":                               7,
		"file_name=GOLD":                 7,
		"file_name=gold03":               1,
		"file_name=zzz":                  0,
		"author=" + alice.ID.String():    4,
		"author=" + bob.ID.String():      3,
		"modified_by=" + bob.ID.String(): 4,
		"author=" + alice.ID.String() + "&author=" + bob.ID.String(): 7,
		"created_at=gte:" + url.QueryEscape(t3.Format(time.RFC3339)): 4,
		"created_at=gt:" + url.QueryEscape(t3.Format(time.RFC3339)):  3,
		"created_at=" + url.QueryEscape(t3.Format(time.RFC3339Nano)): 1,
		"created_at=gte:" + url.QueryEscape(t3.Format(time.RFC3339)) + "&created_at=lt:" + url.QueryEscape(t3.Add(2*time.Minute).Format("2006-01-02 15:04:05")): 2,
		"modified_at=gt:" + url.QueryEscape(t3.Add(3*time.Minute).Format(time.RFC3339)):                                                                         1,
		"deleted_at=lt:2100-01-01T00:00:00Z": 0,
		"deleted=false":                      7,
	}
	for q, want := range cases {
		if got := total(q); got != want {
			t.Errorf("%s: total %d, want %d", q, got, want)
		}
	}
	// Default order: created_at ascending; order_by desc.
	l := c.api("GET", "?order_by=desc:created_at").json(t)
	fs := l["files"].([]any)
	if fs[0].(map[string]any)["file_id"] != ids[6] || fs[6].(map[string]any)["file_id"] != ids[0] {
		t.Fatal("desc order")
	}
	l = c.api("GET", "?order_by=desc:modified_at").json(t)
	if l["files"].([]any)[0].(map[string]any)["file_id"] != ids[0] {
		t.Fatal("modified order")
	}
	// Paging.
	var seen []string
	for off := 0; ; {
		r := c.api("GET", fmt.Sprintf("?limit=3&offset=%d", off))
		m := r.json(t)
		count, _ := m["count"].(json.Number).Int64()
		tot, _ := m["total"].(json.Number).Int64()
		links := m["links"].(map[string]any)
		for _, f := range m["files"].([]any) {
			fm := f.(map[string]any)
			seen = append(seen, fm["file_id"].(string))
			if fm["links"].(map[string]any)["self"] == "" {
				t.Fatal("no links.self")
			}
		}
		if (off == 0) != (links["prev"] == nil) {
			t.Fatalf("prev at %d: %v", off, links["prev"])
		}
		if off+int(count) >= int(tot) {
			if links["next"] != nil {
				t.Fatal("next at end")
			}
			break
		}
		if !strings.Contains(links["next"].(string), fmt.Sprintf("offset=%d", off+3)) {
			t.Fatalf("next %v", links["next"])
		}
		off += int(count)
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("paging order %v want %v", seen, ids)
	}
	if l := c.api("GET", "?offset=100").json(t); l["count"].(json.Number).String() != "0" || l["total"].(json.Number).String() != "7" {
		t.Fatalf("past the end %v", l)
	}
	if l := c.api("GET", "").json(t); l["limit"].(json.Number).String() != "5000" {
		t.Fatal("default limit")
	}
}

// TestDataDirHasOneOwner: a second server on a data dir in use is refused
// with a sentence naming the owner; once the first closes, it opens.
func TestDataDirHasOneOwner(t *testing.T) {
	dir := t.TempDir()
	first, err := New(Options{DataDir: dir, Owner: "mounted at /home/u/Evo"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{DataDir: dir})
	want := fmt.Sprintf("data dir %s is in use by evofs (pid %d, mounted at /home/u/Evo)", dir, os.Getpid())
	if err == nil || err.Error() != want {
		t.Fatalf("second server: %v, want %q", err, want)
	}
	first.Close()
	again, err := New(Options{DataDir: dir})
	if err != nil {
		t.Fatalf("after the owner closed: %v", err)
	}
	again.Close()
}
