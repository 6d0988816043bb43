package metrics

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"evofs/cache"
	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the samples of a family whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// Publishing and reading a file against the service moves the request and
// byte counters of its operations; gauges read the queue and the cache.
func TestScrapedCountersMove(t *testing.T) {
	ts := emulator.NewTestServer(t, emulator.Options{})
	m := New()
	c, err := remote.New(remote.Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: remote.StaticToken(ts.Token),
		HTTPClient: &http.Client{Transport: m.Transport(remote.NewTransport(4))}, OnRetry: m.OnRetry})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	m.Cache(cc.Usage)
	m.Queue(func() []writeback.JobStatus {
		return []writeback.JobStatus{{State: writeback.StatePending}, {State: writeback.StateFailed}}
	})
	m.Tokens(remote.StaticToken("x")) // no refresh count: not registered
	addr, stop, err := m.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	url := "http://" + addr.String() + "/metrics"

	before := scrape(t, url)
	if v := value(before, "evofs_remote_bytes_total", map[string]string{"op": "put blob", "direction": "sent"}); v > 0 {
		t.Fatalf("bytes sent before any upload: %v", v)
	}
	data := make([]byte, 300<<10)
	rand.Read(data)
	meta, err := c.Publish(context.Background(), remote.Target{Path: "m/a.bin"}, bytes.NewReader(data), int64(len(data)), remote.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ts.FailNext(emulator.OpGetBlob, 1, emulator.Fault{Status: 503})
	got := make(writerAt, len(data))
	if err := c.Download(context.Background(), c.NewBlob(meta), got, 0, meta.Size, nil); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, url)
	if v := value(after, "evofs_remote_bytes_total", map[string]string{"op": "put blob", "direction": "sent"}); v < float64(len(data)) {
		t.Fatalf("put blob bytes sent %v, want ≥ %d", v, len(data))
	}
	if v := value(after, "evofs_remote_bytes_total", map[string]string{"op": "get blob", "direction": "received"}); v < float64(len(data)) {
		t.Fatalf("get blob bytes received %v, want ≥ %d", v, len(data))
	}
	if v := value(after, "evofs_remote_requests_total", map[string]string{"op": "get blob", "status": "503"}); v != 1 {
		t.Fatalf("get blob 503s %v, want 1", v)
	}
	if v := value(after, "evofs_remote_retries_total", map[string]string{"op": "get blob"}); v != 1 {
		t.Fatalf("get blob retries %v, want 1", v)
	}
	if v := value(after, "evofs_remote_requests_total", map[string]string{"status": "200"}); v < 2 {
		t.Fatalf("successful requests %v", v)
	}
	if v := value(after, "evofs_publish_queue_files", nil); v != 1 {
		t.Fatalf("queue gauge %v", v)
	}
	if v := value(after, "evofs_publish_failed_files", nil); v != 1 {
		t.Fatalf("failed gauge %v", v)
	}
	if v := value(after, "evofs_cache_max_bytes", nil); v <= 0 {
		t.Fatalf("cache budget %v", v)
	}
	if _, ok := after["evofs_token_refreshes_total"]; ok {
		t.Fatal("refreshes of a static token")
	}
}

type writerAt []byte

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return copy(w[off:], p), nil }
