package main

// The result table: one row per measurement, a column per tool, the
// baselines each tool is compared with, the ratios, and who is ahead.

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one row. val and base are per tool (evofs, rclone); base 0
// means the row has no baseline. text, when set, replaces a figure.
type result struct {
	what        string
	unit        string // "s" or "MiB"
	val, base   [2]float64
	baseName    string
	higherIsBad bool // true for times and memory
	text        [2]string
	ahead       string // set by the row when val does not say
}

func (r result) cell(i int) string {
	if r.text[i] != "" {
		return r.text[i]
	}
	return fmtVal(r.val[i], r.unit)
}

func fmtVal(v float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "MiB":
		return fmt.Sprintf("%.0f MiB", v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

func (r result) ratio(i int) string {
	if r.base[i] == 0 || r.val[i] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.base[i]/r.val[i])
}

func (r result) baseline() string {
	switch {
	case r.base[0] == 0 && r.base[1] == 0:
		return "-"
	case r.base[0] == r.base[1]:
		return r.baseName + " " + fmtVal(r.base[0], r.unit)
	}
	return r.baseName + " " + fmtVal(r.base[0], r.unit) + " / " + fmtVal(r.base[1], r.unit)
}

func (r result) winner() string {
	if r.ahead != "" {
		return r.ahead
	}
	a, b := r.val[0], r.val[1]
	if !r.higherIsBad {
		a, b = -a, -b
	}
	switch {
	case a < b:
		return "evofs"
	case b < a:
		return "rclone"
	}
	return "tie"
}

func printTable(w io.Writer, rows []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tevofs\trclone\tbaseline (evofs / rclone)\tratio evofs\tratio rclone\tahead")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.what, r.cell(0), r.cell(1), r.baseline(), r.ratio(0), r.ratio(1), r.winner())
	}
	tw.Flush()
}

// printHeader says when, where and with what the table was measured.
func printHeader(evofsVersion, rcloneVersion, azuriteVersion string) {
	osName := "Linux"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	memGiB := float64(procMemTotalKiB()) / (1 << 20)
	fmt.Printf("bench-peer %s UTC; %d cores, %.0f GiB, %s, kernel %s\n", time.Now().UTC().Format("2006-01-02 15:04"),
		runtime.NumCPU(), memGiB, osName, strings.TrimSpace(string(kernel)))
	if c, err := runOut("git", "rev-parse", "--short", "HEAD"); err == nil {
		evofsVersion += " at " + strings.TrimSpace(c)
	}
	fmt.Printf("%s; %s; Azurite %s; %s\n", evofsVersion, rcloneVersion, azuriteVersion, cfg)
}

func procMemTotalKiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &n)
			return n
		}
	}
	return 0
}
