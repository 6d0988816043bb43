package emulator

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
)

// TestConcurrentWriters races uploads of one path and of distinct paths.
// Version ids must be unique and the latest must be the highest committed one.
func TestConcurrentWriters(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(fmt.Sprint("disk=", disk), func(t *testing.T) {
			o := Options{}
			if disk {
				o.DataDir = t.TempDir()
			}
			c := newClient(t, o)
			var mu sync.Mutex
			seen := map[string]bool{}
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						_, v := c.upload("shared.txt", []byte(fmt.Sprintf("%d-%d", g, i)))
						c.upload(fmt.Sprintf("own/%d/%d.txt", g, i), []byte("x"))
						mu.Lock()
						if seen[v] {
							t.Errorf("duplicate version %s", v)
						}
						seen[v] = true
						mu.Unlock()
					}
				}(g)
			}
			wg.Wait()
			m := c.api("GET", "path/shared.txt?include_versions=true").json(t)
			vs := m["versions"].([]any)
			if len(vs) != 80 {
				t.Fatalf("%d versions", len(vs))
			}
			var max int64
			for _, v := range vs {
				id, _ := strconv.ParseInt(v.(map[string]any)["version_id"].(string), 10, 64)
				max = maxI(max, id)
			}
			if m["version_id"] != strconv.FormatInt(max, 10) {
				t.Fatalf("latest %v, max %d", m["version_id"], max)
			}
			if l := c.api("GET", "").json(t); l["total"].(json.Number).String() != "81" {
				t.Fatalf("total %v", l["total"])
			}
		})
	}
}

func maxI(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
