// Command mount.evofs lets mount(8) and /etc/fstab mount Evo workspaces. It
// translates the mount helper calling convention
//
//	mount.evofs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]
//
// into `evofs mount --daemon FLAGS MOUNTPOINT` and returns once the mount is
// ready. SOURCE is a profile name (see `evofs mount --profile`), or
// ORG/WORKSPACE (names or ids), or "evofs" / "none" to take everything from
// the options. Install it (or a link to it) as /sbin/mount.evofs and, for
// type fuse.evofs, /sbin/mount.fuse.evofs. Example fstab line:
//
//	work  /home/ada/Evo  evofs  noauto,user,_netdev,uid=1000,gid=1000,config=/home/ada/.config/evofs/config  0  0
//
// Options: every `evofs mount` flag as key=value or bare key for booleans
// (profile=, org=, workspace=, host=, cache-dir=, cache-size=, uid=, gid=,
// umask=, log-file=, login-file=, config=, …), plus the usual spellings
// allow_other, ro, rw. Generic mount options (defaults, auto, noauto, user,
// users, nouser, _netdev, nofail, exec, noexec, suid, nosuid, dev, nodev,
// atime, noatime, relatime, async, sync as a generic flag, x-*, comment=*)
// are accepted and ignored.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	args, fake, err := translate(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "mount.evofs: %v\n", err)
		fmt.Fprintln(os.Stderr, "usage: mount.evofs SOURCE MOUNTPOINT [-o OPTIONS]")
		os.Exit(1)
	}
	bin := evofsPath()
	if fake || os.Getenv("MOUNT_EVOFS_DRY_RUN") != "" {
		fmt.Println(strings.Join(append([]string{bin}, args...), " "))
		return
	}
	if err := syscall.Exec(bin, append([]string{"evofs"}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "mount.evofs: cannot run %s: %v\n", bin, err)
		os.Exit(1)
	}
}

// evofsPath is evofs next to this helper, else on PATH.
func evofsPath() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "evofs")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("evofs"); err == nil {
		return p
	}
	return "/usr/local/bin/evofs"
}

// ignored are generic mount options that mean nothing to evofs.
var ignored = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "users": true, "nouser": true, "owner": true,
	"_netdev": true, "nofail": true, "exec": true, "noexec": true, "suid": true, "nosuid": true, "dev": true,
	"nodev": true, "atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"async": true, "rw": true, "nodiratime": true, "diratime": true, "lazytime": true, "nolazytime": true,
}

// renamed maps conventional FUSE/mount option names to evofs flags.
var renamed = map[string]string{
	"allow_other": "allow-other",
	"ro":          "read-only",
	"debug":       "debug-fuse",
	"nonempty":    "allow-non-empty",
}

// translate turns helper arguments into `evofs mount` arguments; fake is
// mount(8)'s -f (say what would be done, do nothing).
func translate(in []string) (out []string, fake bool, err error) {
	var pos, opts []string
	for i := 0; i < len(in); i++ {
		a := in[i]
		switch {
		case a == "-o":
			if i+1 >= len(in) {
				return nil, false, fmt.Errorf("-o needs a value")
			}
			i++
			opts = append(opts, strings.Split(in[i], ",")...)
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-f":
			fake = true
		case a == "-s", a == "-n", a == "-v", a == "-i":
			// sloppy, no mtab, verbose, no helper: nothing to do
		case a == "-t":
			i++ // type, given by some callers
		case strings.HasPrefix(a, "-"):
			return nil, false, fmt.Errorf("unknown argument %q", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, fmt.Errorf("need SOURCE and MOUNTPOINT, got %d arguments", len(pos))
	}
	source, mountpoint := strings.TrimPrefix(pos[0], "evofs#"), pos[1]
	out = []string{"mount", "--daemon"}
	switch {
	case source == "" || source == "evofs" || source == "none":
	case source == "local":
		out = append(out, "--local")
	case strings.Contains(source, "/"):
		org, ws, _ := strings.Cut(source, "/")
		out = append(out, "--org", org, "--workspace", ws)
	default:
		out = append(out, "--profile", source)
	}
	for _, o := range opts {
		o = strings.TrimSpace(o)
		if o == "" || ignored[o] || strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment=") {
			continue
		}
		k, v, hasV := strings.Cut(o, "=")
		if n, ok := renamed[k]; ok {
			k = n
		}
		k = strings.ReplaceAll(k, "_", "-")
		if !knownFlags[k] {
			return nil, false, fmt.Errorf("unknown option %q", o)
		}
		if hasV {
			out = append(out, "--"+k+"="+v)
		} else {
			out = append(out, "--"+k)
		}
	}
	return append(out, mountpoint), fake, nil
}

// knownFlags are the `evofs mount` flags an option may set.
var knownFlags = map[string]bool{
	"host": true, "org": true, "workspace": true, "issuer": true, "discovery-url": true, "client-id": true,
	"client-secret-file": true, "token-file": true, "login-file": true, "profile": true, "config": true,
	"local": true, "log-file": true, "umask": true, "cache-dir": true, "local-data": true, "log-level": true,
	"read-only": true, "sync-close": true, "allow-other": true, "debug-fuse": true, "poll-interval": true,
	"write-back-delay": true, "shutdown-timeout": true, "attr-ttl": true, "entry-ttl": true, "uid": true,
	"gid": true, "transfers": true, "cache-size": true, "max-dir-rename": true, "local-patterns": true,
	"allow-non-empty": true, "ca-file": true, "bwlimit": true, "metrics-addr": true, "file-mode": true, "dir-mode": true,
	"log-format": true, "log-file-max-size": true, "log-file-max-backups": true,
}
