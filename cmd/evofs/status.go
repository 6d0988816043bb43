package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"evofs/fusefs/vfs"
)

// runStatus prints a mount's pending publishes and cache usage. It reads the
// root's user.evofs.status attribute, so it needs no socket or daemon API.
func runStatus(args []string) error {
	fl := flag.NewFlagSet("status", flag.ExitOnError)
	asJSON := fl.Bool("json", false, "print JSON")
	fl.Parse(args)
	if fl.NArg() != 1 {
		return fmt.Errorf("usage: evofs status [--json] MOUNTPOINT")
	}
	buf := make([]byte, 1<<20)
	n, err := unix.Getxattr(fl.Arg(0), vfs.XattrStatus, buf)
	if err != nil {
		return fmt.Errorf("%s is not an evofs mount (or is not responding): %w", fl.Arg(0), err)
	}
	if *asJSON {
		os.Stdout.Write(buf[:n])
		fmt.Println()
		return nil
	}
	var st vfs.Status
	if err := json.Unmarshal(buf[:n], &st); err != nil {
		return err
	}
	if !st.Online {
		fmt.Printf("OFFLINE: %s\n", st.LastError)
	}
	fmt.Printf("cache: %d MiB of %d MiB, %d entries; staging %d MiB\n",
		st.Cache.Bytes>>20, st.Cache.MaxBytes>>20, st.Cache.Entries, st.Cache.Staging>>20)
	if len(st.Jobs) == 0 {
		fmt.Println("nothing pending: every closed file is published")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STATE\tPROGRESS\tTRIES\tPATH\tLAST ERROR")
	for _, j := range st.Jobs {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", j.State, progress(j.Done, j.Size), j.Tries, j.Path, j.LastError)
	}
	return w.Flush()
}

func progress(done, total int64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%d%% of %s", done*100/total, human(total))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
