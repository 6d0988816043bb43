package emulator

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestGuidePythonRequests runs the upload guide, written with Python
// requests, against the emulator. The guide uploads a multipart form body,
// which storage keeps byte for byte.
func TestGuidePythonRequests(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import requests").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs %s with requests (apt install python3-requests): %v", py, err)
		}
		t.Skipf("%s with requests not available: %v", py, err)
	}
	ts := NewTestServer(t, Options{PublishDelay: 300 * time.Millisecond})
	cmd := exec.Command(py, "testdata/guide_requests.py", ts.URL, ts.Org.String(), ts.Workspace.String(), ts.Token, "Guide Dir/my file.txt")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("guide script: %v\n%s", err, stderr.String())
	}
	var res struct {
		FileID     string `json:"file_id"`
		VersionID  string `json:"version_id"`
		Name       string `json:"name"`
		Path       string `json:"path"`
		Size       int64  `json:"size"`
		Downloaded int64  `json:"downloaded"`
		ContentMD5 string `json:"content_md5"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	data, fid, vid, err := ts.ReadFile(ts.Org, ts.Workspace, "guide dir/MY FILE.txt")
	if err != nil {
		t.Fatal(err)
	}
	if fid.String() != res.FileID || vid != res.VersionID || res.Name != "my file.txt" || res.Path != "/Guide Dir/" ||
		res.Size != int64(len(data)) || res.Downloaded != res.Size || res.ContentMD5 == "" {
		t.Fatalf("script saw %+v; stored %d bytes %s %s", res, len(data), fid, vid)
	}
	// The stored blob is the multipart body as sent.
	if !bytes.HasPrefix(data, []byte("--")) || !bytes.Contains(data, []byte(strings.Repeat("Hello from the upload guide!\n", 7))) ||
		!bytes.Contains(data, []byte(`name="`+res.FileID+`"`)) {
		t.Fatalf("stored body %q", data)
	}
	if ts.Requests(OpGetByPath) < 2 {
		t.Fatalf("the script did not poll (get requests %d)", ts.Requests(OpGetByPath))
	}
}
