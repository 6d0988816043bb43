package integration

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"evofs/remote/emulator"
)

func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
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

// metricSum adds the counter, gauge or histogram-count samples of a family
// whose labels include want.
func metricSum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// /metrics of a mounted workspace: reading a remote file and publishing a
// written one move the FUSE, request and byte counters.
func TestProcessMetricsMoveWithReadsAndPublishes(t *testing.T) {
	requireFUSE(t)
	ts := newProcServer(t, emulator.Options{})
	remoteData := randomBytes(70, 400<<10)
	ts.PutFile(ts.Org, ts.Workspace, "r.bin", remoteData)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	mp, cacheDir := t.TempDir(), t.TempDir()
	p := mountEvofs(t, "mount", ts, mp, cacheDir, "--write-back-delay", "0s", "--metrics-addr", addr)
	url := "http://" + addr + "/metrics"
	before := scrapeMetrics(t, url)

	mustEqual(t, "remote file", readFile(t, mp+"/r.bin"), remoteData)
	written := randomBytes(71, 300<<10)
	writeIn(t, mp, "w.bin", written)
	waitServed(t, ts, "w.bin", written, 20*time.Second)
	checks := []struct {
		name   string
		labels map[string]string
		least  float64
	}{
		{"evofs_remote_bytes_total", map[string]string{"op": "get blob", "direction": "received"}, float64(len(remoteData))},
		{"evofs_remote_bytes_total", map[string]string{"op": "put blob", "direction": "sent"}, float64(len(written))},
		{"evofs_remote_requests_total", map[string]string{"op": "put blob", "status": "201"}, 1},
		{"evofs_fuse_op_duration_seconds", map[string]string{"op": "read"}, 1},
		{"evofs_fuse_op_duration_seconds", map[string]string{"op": "write"}, 1},
		{"evofs_fuse_op_duration_seconds", map[string]string{"op": "flush"}, 1},
		{"evofs_publish_duration_seconds", map[string]string{"outcome": "published"}, 1},
		{"evofs_cache_misses_total", nil, 1},
		// the first read misses; how much of the file the core's read-ahead
		// then fetches as prefetch depends on the kernel's read size
		{"evofs_cache_miss_bytes_total", nil, 1},
	}
	// Counters move after the events a test can wait for (a publish is
	// visible before its latency is observed): poll until all have moved.
	var short []string
	eventually(t, 20*time.Second, func() bool {
		after := scrapeMetrics(t, url)
		short = short[:0]
		if q := metricSum(after, "evofs_publish_queue_files", nil); q != 0 {
			short = append(short, fmt.Sprintf("evofs_publish_queue_files is %v, want 0", q))
		}
		for _, c := range checks {
			b, a := metricSum(before, c.name, c.labels), metricSum(after, c.name, c.labels)
			if a-b < c.least {
				short = append(short, fmt.Sprintf("%s%v moved by %v, want ≥ %v", c.name, c.labels, a-b, c.least))
			}
		}
		return len(short) == 0
	})
	for _, s := range short {
		t.Error(s)
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(60 * time.Second)
}
