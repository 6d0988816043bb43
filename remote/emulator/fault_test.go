package emulator

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestFaults(t *testing.T) {
	c := newClient(t, Options{})
	c.upload("f.txt", []byte("f"))
	c.ts.ResetRequests()

	c.ts.FailNext(OpGetByPath, 2, Fault{Status: 503, RetryAfter: 1500 * time.Millisecond})
	for i := 0; i < 2; i++ {
		r := c.api("GET", "path/f.txt")
		wantProblem(t, r, 503, "/api-errors")
		if r.header.Get("Retry-After") != "2" {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
	}
	if r := c.api("GET", "path/f.txt"); r.status != 200 {
		t.Fatalf("after faults %d", r.status)
	}
	if n := c.ts.Requests(OpGetByPath); n != 3 {
		t.Fatalf("counted %d", n)
	}
	c.ts.FailNext(OpList, 1, Fault{Status: 502})
	wantProblem(t, c.api("GET", ""), 502, "/bad-gateway")

	// Blob faults answer in XML.
	dl, _ := c.downloadURL("f.txt")
	c.ts.FailNext(OpGetBlob, 1, Fault{Status: 503})
	wantBlobError(t, c.do("GET", dl, nil, nil), 503, "ServerBusy")
	c.ts.FailNext(OpAny, 1, Fault{Status: 500})
	wantBlobError(t, c.do("GET", dl, nil, nil), 500, "InternalError")

	// Dropped connection.
	c.ts.FailNext(OpGetBlob, 1, Fault{Drop: true})
	// A fresh connection, so the transport does not replay the GET on a reused one.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := fresh.Get(dl); err == nil {
		t.Fatal("dropped connection answered")
	}
	if r := c.do("GET", dl, nil, nil); r.status != 200 {
		t.Fatal("after drop")
	}

	// Latency only: the request still succeeds, later.
	c.ts.FailNext(OpHealth, 1, Fault{Latency: 150 * time.Millisecond})
	start := time.Now()
	if r := c.do("GET", c.ts.URL+"/file/health_check", nil, nil); r.status != 200 {
		t.Fatal("latency fault")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("latency %v", d)
	}

	// Rate: 1 always fails, 0 never; seeded rate in between fails some.
	c.ts.FailRate(OpHealth, 1, Fault{Status: 500})
	if r := c.do("GET", c.ts.URL+"/file/health_check", nil, nil); r.status != 500 {
		t.Fatal("rate 1")
	}
	c.ts.ClearFaults()
	c.ts.FailRate(OpHealth, 0.5, Fault{Status: 500})
	failed := 0
	for i := 0; i < 100; i++ {
		if c.do("GET", c.ts.URL+"/file/health_check", nil, nil).status == 500 {
			failed++
		}
	}
	if failed < 20 || failed > 80 {
		t.Fatalf("rate 0.5 failed %d/100", failed)
	}
	c.ts.ClearFaults()
	if r := c.do("GET", c.ts.URL+"/file/health_check", nil, nil); r.status != 200 {
		t.Fatal("after ClearFaults")
	}
	if c.ts.Requests(OpHealth) != 103 || c.ts.Requests(OpAny) < 110 {
		t.Fatalf("counters %d %d", c.ts.Requests(OpHealth), c.ts.Requests(OpAny))
	}
	c.ts.ResetRequests()
	if c.ts.Requests(OpAny) != 0 {
		t.Fatal("reset")
	}
}

func TestRequestLogRedacts(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	c := newClient(t, Options{Logger: logrus.NewEntry(l), Tokens: map[string]Grant{"secret-token-123": {TestUser, RoleEditor}}})
	c.token = "secret-token-123"
	up, _, _ := c.register("l.txt")
	c.do("PUT", up, []byte("x"), map[string]string{"x-ms-blob-type": "BlockBlob"})
	dl, _ := c.downloadURL("l.txt")
	c.do("GET", dl, nil, nil)
	c.ts.Close() // flush: Shutdown waits for handlers, whose deferred log lines are written before they return
	out := buf.String()
	for _, u := range []string{up, dl} {
		sig := u[strings.Index(u, "sig=")+4:]
		if strings.Contains(out, sig) {
			t.Fatalf("log holds a signature: %s", out)
		}
	}
	if strings.Contains(out, "secret-token-123") {
		t.Fatal("log holds the token")
	}
	for _, want := range []string{`"op":"put-blob"`, `"status":201`, `"method":"GET"`, "sig=REDACTED", `"duration"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %s: %s", want, out)
		}
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	ts := NewTestServer(t, Options{DataDir: dir})
	c := &tclient{t: t, ts: ts, token: TestToken}
	fidA, vA1 := c.upload("A/a.txt", []byte("a1"))
	_, vA2 := c.upload("A/a.txt", []byte("a2"))
	fidB, _ := c.upload("b.txt", []byte("b"))
	fidC, _ := c.upload("c.txt", []byte("c"))
	c.api("DELETE", fidB)
	c.api("DELETE", fidC)
	c.api("PUT", fidC+"?deleted=false")
	pendingUp, _, _ := c.register("pending.txt")
	c.do("PUT", blockURL(pendingUp, "0"), []byte("lost"), nil)
	ts.Close()

	reopen := func() *tclient {
		ts2 := NewTestServer(t, Options{DataDir: dir})
		ts2.Org, ts2.Workspace = ts.Org, ts.Workspace
		return &tclient{t: t, ts: ts2, token: TestToken}
	}
	c2 := reopen()
	g := c2.api("GET", fidA+"?include_versions=true").json(t)
	if g["version_id"] != vA2 || len(g["versions"].([]any)) != 2 {
		t.Fatalf("after reopen %v", g)
	}
	old := c2.api("GET", fidA+"?version_id="+vA1).json(t)
	if d := c2.do("GET", old["download"].(string), nil, nil); string(d.body) != "a1" {
		t.Fatalf("old version content %q", d.body)
	}
	wantProblem(t, c2.api("GET", fidB), 410, "/files/gone")
	if data, _, _, err := c2.ts.ReadFile(ts.Org, ts.Workspace, "c.txt"); err != nil || string(data) != "c" {
		t.Fatalf("restored file %q %v", data, err)
	}
	wantProblem(t, c2.api("GET", "path/pending.txt"), 404, "/files/not-found")
	// New ids keep increasing after a restart.
	_, vA3 := c2.upload("a/A.TXT", []byte("a3"))
	if len(vA3) < len(vA2) || (len(vA3) == len(vA2) && vA3 <= vA2) {
		t.Fatalf("version id %s not above %s", vA3, vA2)
	}
	c2.ts.Close()

	// A torn last record (crash mid-append) is ignored, and appends continue cleanly.
	logf := filepath.Join(dir, "meta.log")
	f, err := os.OpenFile(logf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"op":"commit","org":"` + ts.Org.String() + `","ws":"` + ts.Workspace.String() + `","file":"` + fidA)
	f.Close()
	c3 := reopen()
	if g := c3.api("GET", fidA).json(t); g["version_id"] != vA3 {
		t.Fatalf("after torn write %v", g)
	}
	c3.upload("d.txt", []byte("d"))
	c3.ts.Close()
	c4 := reopen()
	if data, _, _, err := c4.ts.ReadFile(ts.Org, ts.Workspace, "d.txt"); err != nil || string(data) != "d" {
		t.Fatalf("append after torn tail: %q %v", data, err)
	}
	if l := c4.api("GET", "").json(t); l["total"].(interface{ String() string }).String() != "3" {
		t.Fatalf("list after reopen %v", l)
	}
	// No staged leftovers survive a restart.
	if ents, _ := os.ReadDir(filepath.Join(dir, "staging")); len(ents) != 0 {
		t.Fatalf("staging not cleared: %v", ents)
	}
}
