package main

import "testing"

func TestParseBwlimit(t *testing.T) {
	for in, want := range map[string][2]int64{
		"": {0, 0}, "0": {0, 0}, "1000": {1000, 1000}, "10M": {10 << 20, 10 << 20},
		"512Ki": {512 << 10, 512 << 10}, "1GB": {1 << 30, 1 << 30}, "1.5k": {1536, 1536}, "1M:4M": {1 << 20, 4 << 20},
	} {
		up, down, err := parseBwlimit(in)
		if err != nil || up != want[0] || down != want[1] {
			t.Errorf("%q: %d:%d, %v; want %d:%d", in, up, down, err, want[0], want[1])
		}
	}
	for _, bad := range []string{"fast", "-1M", "1M:", "M"} {
		if _, _, err := parseBwlimit(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
