package emulator

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// A shaped link can only make downloads slower, so its lower bounds are
// safe to assert: two downloads sharing 4 MiB/s take at least their total
// size (less one burst each) over the bandwidth, and every answer waits
// the round trip. Bytes are unchanged.
func TestLinkShapesDownloads(t *testing.T) {
	c := newClient(t, Options{})
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rand.N(256))
	}
	c.upload("big.bin", data)
	u, _ := c.downloadURL("big.bin")

	const rtt = 150 * time.Millisecond
	c.ts.SetLink(Link{RTT: rtt})
	start := time.Now()
	if d := c.do("GET", u, nil, map[string]string{"Range": "bytes=0-0"}); d.status != 206 || d.body[0] != data[0] {
		t.Fatalf("ranged GET: %d", d.status)
	}
	if took := time.Since(start); took < rtt {
		t.Fatalf("first byte after %v, want at least the %v round trip", took, rtt)
	}

	const bw = 4 << 20
	c.ts.SetLink(Link{Bandwidth: bw})
	start = time.Now()
	done := make(chan resp, 2)
	for range 2 {
		go func() { done <- c.do("GET", u, nil, nil) }()
	}
	for range 2 {
		if d := <-done; d.status != 200 || !bytes.Equal(d.body, data) {
			t.Fatalf("shaped download: %d, %d bytes", d.status, len(d.body))
		}
	}
	least := time.Duration(float64(2*len(data)-2*linkBurst) / bw * float64(time.Second))
	if took := time.Since(start); took < least {
		t.Fatalf("2 MiB over a 4 MiB/s link took %v, want at least %v", took, least)
	}

	c.ts.SetLink(Link{})
	if d := c.do("GET", u, nil, nil); !bytes.Equal(d.body, data) {
		t.Fatal("unshaped download changed")
	}
}

// A link's round trip also delays API calls and blob uploads, one round
// trip per request: a register plus a Put Blob take at least two.
func TestLinkDelaysRequests(t *testing.T) {
	c := newClient(t, Options{})
	const rtt = 100 * time.Millisecond
	c.ts.SetLink(Link{RTT: rtt})
	start := time.Now()
	c.upload("small.bin", []byte("hello"))
	if took := time.Since(start); took < 2*rtt {
		t.Fatalf("register + Put Blob took %v, want at least two %v round trips", took, rtt)
	}
	start = time.Now()
	if r := c.api("GET", "path/small.bin"); r.status != 200 {
		t.Fatalf("get by path: %d %s", r.status, r.body)
	}
	if took := time.Since(start); took < rtt {
		t.Fatalf("get by path took %v, want at least the %v round trip", took, rtt)
	}
}

// Uploads are shaped by their own direction of the link: two Put Blocks
// sharing 4 MiB/s take at least their size over the bandwidth and each
// waits the round trip, while an unshaped download direction stays fast;
// the staged bytes are unchanged.
func TestLinkShapesUploads(t *testing.T) {
	c := newClient(t, Options{})
	up, _, _ := c.register("up.bin")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rand.N(256))
	}
	const rtt = 100 * time.Millisecond
	const bw = 4 << 20
	c.ts.SetLink(Link{UploadBandwidth: bw, RTT: rtt})
	start := time.Now()
	done := make(chan resp, 2)
	for i := range 2 {
		go func() { done <- c.do("PUT", blockURL(up, fmt.Sprint(i)), data, nil) }()
	}
	for range 2 {
		if d := <-done; d.status != 201 {
			t.Fatalf("shaped put block: %d %s", d.status, d.body)
		}
	}
	least := rtt + time.Duration(float64(2*len(data)-2*linkBurst)/bw*float64(time.Second))
	if took := time.Since(start); took < least {
		t.Fatalf("2 MiB of blocks over a 4 MiB/s link took %v, want at least %v", took, least)
	}
	if r := c.do("PUT", up+"&comp=blocklist", blockList("Latest:0", "Latest:1"), nil); r.status != 201 {
		t.Fatalf("put block list: %d %s", r.status, r.body)
	}
	c.ts.SetLink(Link{})
	u, _ := c.downloadURL("up.bin")
	if d := c.do("GET", u, nil, nil); !bytes.Equal(d.body, append(append([]byte(nil), data...), data...)) {
		t.Fatal("shaped upload changed the bytes")
	}
}

// section serves every range of a blob held in several memory segments,
// whether it is written out whole (WriteTo) or read piecewise.
func TestSectionOfSegments(t *testing.T) {
	segs := [][]byte{[]byte("abc"), []byte("defgh"), []byte("i"), []byte("jk")}
	whole := bytes.Join(segs, nil)
	p := part{segs: segs, size: int64(len(whole))}
	ra, _, _ := memStore{}.open(p)
	for off := 0; off <= len(whole); off++ {
		for n := 0; off+n <= len(whole); n++ {
			var w bytes.Buffer
			if _, err := section(ra, int64(off), int64(n)).(io.WriterTo).WriteTo(&w); err != nil || w.String() != string(whole[off:off+n]) {
				t.Fatalf("WriteTo [%d,+%d) = %q, %v", off, n, w.String(), err)
			}
			got, err := io.ReadAll(struct{ io.Reader }{section(ra, int64(off), int64(n))})
			if err != nil || string(got) != string(whole[off:off+n]) {
				t.Fatalf("Read [%d,+%d) = %q, %v", off, n, got, err)
			}
		}
	}
}
