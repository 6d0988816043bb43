// Package metrics exposes a mount's Prometheus metrics. It touches the
// other packages only at their edges: an http.RoundTripper around the
// remote client's transport (requests and bytes by operation and status),
// remote's retry hook, and gauges and counters read from existing stats
// (queue, cache, token source) at scrape time. It holds no lock of theirs.
package metrics

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"evofs/cache"
	"evofs/remote"
	"evofs/writeback"
)

// Metrics is one mount's registry.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

// New makes the registry with the transport and retry metrics.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evofs_remote_requests_total",
			Help: "HTTP requests to the File API and blob storage by operation and status code (\"error\": no answer)."}, []string{"op", "status"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evofs_remote_bytes_total",
			Help: "Body bytes sent and received by operation."}, []string{"op", "direction"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evofs_remote_retries_total",
			Help: "Retries of failed requests by operation."}, []string{"op"}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.retries, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where further collectors go.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// OnRetry is remote.Config.OnRetry.
func (m *Metrics) OnRetry(op string) { m.retries.WithLabelValues(op).Inc() }

// Transport wraps rt to count requests and bytes.
func (m *Metrics) Transport(rt http.RoundTripper) http.RoundTripper { return &transport{m: m, rt: rt} }

type transport struct {
	m  *Metrics
	rt http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	op := remote.Operation(req.Context())
	if op == "" {
		op = blobOp(req)
	}
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, c: t.m.bytes.WithLabelValues(op, "sent")}
	}
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		t.m.requests.WithLabelValues(op, "error").Inc()
		return nil, err
	}
	t.m.requests.WithLabelValues(op, strconv.Itoa(resp.StatusCode)).Inc()
	resp.Body = &countingBody{ReadCloser: resp.Body, c: t.m.bytes.WithLabelValues(op, "received")}
	return resp, nil
}

// blobOp names a blob request made by the SDK from its method and query.
func blobOp(req *http.Request) string {
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodGet:
		return "get blob"
	case req.Method == http.MethodHead:
		return "head blob"
	case q.Get("comp") == "block":
		return "put block"
	case q.Get("comp") == "blocklist":
		return "put block list"
	case req.Method == http.MethodPut:
		return "put blob"
	}
	return strings.ToLower(req.Method)
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.Add(float64(n))
	return n, err
}

// Fuse is fusefs.Options.Observe: kernel operation latency by operation.
func (m *Metrics) Fuse() func(op string, d time.Duration) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "evofs_fuse_op_duration_seconds",
		Help:    "Latency of kernel operations on the mount by operation.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"op"})
	m.reg.MustRegister(h)
	return func(op string, d time.Duration) { h.WithLabelValues(op).Observe(d.Seconds()) }
}

// Queue registers queue depth by state, read at scrape time.
func (m *Metrics) Queue(status func() []writeback.JobStatus) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "evofs_publish_queue_files",
		Help: "Closed files not yet published (pending or uploading)."}, func() float64 {
		n := 0
		for _, j := range status() {
			if j.State != writeback.StateFailed {
				n++
			}
		}
		return float64(n)
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "evofs_publish_failed_files",
		Help: "Files whose publish failed for good (kept until written again)."}, func() float64 {
		n := 0
		for _, j := range status() {
			if j.State == writeback.StateFailed {
				n++
			}
		}
		return float64(n)
	}))
}

// Cache registers cache usage, read at scrape time.
func (m *Metrics) Cache(usage func() cache.Usage) {
	g := func(name, help string, f func(u cache.Usage) float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(usage()) }))
	}
	g("evofs_cache_bytes", "Bytes of content in the cache.", func(u cache.Usage) float64 { return float64(u.Bytes) })
	g("evofs_cache_max_bytes", "The cache's byte budget.", func(u cache.Usage) float64 { return float64(u.MaxBytes) })
	g("evofs_cache_entries", "Cached file versions.", func(u cache.Usage) float64 { return float64(u.Entries) })
	g("evofs_staging_bytes", "Bytes in staging files (written, not yet published).", func(u cache.Usage) float64 { return float64(u.Staging) })
	c := func(name, help string, f func(u cache.Usage) float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(usage()) }))
	}
	c("evofs_cache_hits_total", "Reads served from content already in the cache.", func(u cache.Usage) float64 { return float64(u.Hits) })
	c("evofs_cache_misses_total", "Reads that had to fetch from the service.", func(u cache.Usage) float64 { return float64(u.Misses) })
	c("evofs_cache_hit_bytes_total", "Bytes of reads served from the cache.", func(u cache.Usage) float64 { return float64(u.HitBytes) })
	c("evofs_cache_miss_bytes_total", "Bytes of reads that had to fetch.", func(u cache.Usage) float64 { return float64(u.MissBytes) })
	c("evofs_cache_evictions_total", "Cached file versions evicted to stay within the budget.", func(u cache.Usage) float64 { return float64(u.Evictions) })
	c("evofs_cache_evicted_bytes_total", "Bytes evicted to stay within the budget.", func(u cache.Usage) float64 { return float64(u.EvictedBytes) })
}

// Publish returns the observer for writeback.Config.ObservePublish: a
// latency histogram of publish attempts by outcome and a failure counter.
func (m *Metrics) Publish() func(outcome string, d time.Duration) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "evofs_publish_duration_seconds",
		Help:    "Publish attempts (register, upload, poll until visible) by outcome.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}, []string{"outcome"})
	fails := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evofs_publish_failures_total",
		Help: "Failed publish attempts: retry (transient, tried again) or failed (for good)."}, []string{"kind"})
	m.reg.MustRegister(h, fails)
	return func(outcome string, d time.Duration) {
		h.WithLabelValues(outcome).Observe(d.Seconds())
		switch outcome {
		case "retry", "failed", "superseded":
			fails.WithLabelValues(outcome).Inc()
		}
	}
}

// Tokens registers the token source's refresh count when it keeps one.
func (m *Metrics) Tokens(ts remote.TokenSource) {
	if r, ok := ts.(interface{ Refreshes() int }); ok {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "evofs_token_refreshes_total",
			Help: "Access tokens fetched with the refresh token or client credentials."}, func() float64 { return float64(r.Refreshes()) }))
	}
}

// Serve serves /metrics on addr; the func stops it.
func (m *Metrics) Serve(addr string) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the mount keeps serving without metrics
		}
	}()
	return ln.Addr(), func() { hs.Close(); <-done }, nil
}
