package main

import (
	"fmt"
	"strings"
)

// parseBwlimit reads --bwlimit: "RATE" for both directions or "UP:DOWN",
// each bytes per second with an optional K, M or G suffix (powers of 1024,
// "i" and a trailing "B" allowed: 10M, 512Ki, 1GB); 0 or "" = unlimited.
func parseBwlimit(s string) (up, down int64, err error) {
	if s == "" {
		return 0, 0, nil
	}
	u, d, two := strings.Cut(s, ":")
	if up, err = parseRate(u); err != nil {
		return 0, 0, fmt.Errorf("--bwlimit %q: %w", s, err)
	}
	down = up
	if two {
		if down, err = parseRate(d); err != nil {
			return 0, 0, fmt.Errorf("--bwlimit %q: %w", s, err)
		}
	}
	return up, down, nil
}

func parseRate(s string) (int64, error) {
	v, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate in bytes per second (e.g. 10M)", s)
	}
	return v, nil
}
