package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestTranslate(t *testing.T) {
	cases := []struct {
		in   string
		want string
	}{
		{"work /home/ada/Evo -o noauto,user,_netdev,uid=1000,gid=1000,allow_other,ro,x-systemd.automount",
			"mount --daemon --profile work --uid=1000 --gid=1000 --allow-other --read-only /home/ada/Evo"},
		{"Acme/Drill\x20holes /mnt/e -o rw,cache_size=1024,umask=022", "mount --daemon --org Acme --workspace Drill holes --cache-size=1024 --umask=022 /mnt/e"},
		{"evofs /mnt/e -s -n -o profile=work,log-file=/var/log/evofs.log", "mount --daemon --profile=work --log-file=/var/log/evofs.log /mnt/e"},
		{"evofs#work /mnt/e", "mount --daemon --profile work /mnt/e"},
		{"local /mnt/e -o nonempty", "mount --daemon --local --allow-non-empty /mnt/e"},
	}
	for _, c := range cases {
		in := strings.Fields(c.in)
		if strings.Contains(c.in, "\x20holes") {
			in = []string{"Acme/Drill holes", "/mnt/e", "-o", "rw,cache_size=1024,umask=022"}
		}
		got, fake, err := translate(in)
		if fake {
			t.Errorf("%q: fake without -f", c.in)
		}
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%q:\n got %q\nwant %q", c.in, strings.Join(got, " "), c.want)
		}
	}
	for _, bad := range [][]string{{"only-one"}, {"a", "b", "-o", "frobnicate"}, {"a", "b", "-z"}} {
		if _, _, err := translate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// mount -f (fake): say what would run, mount nothing.
	if got, fake, err := translate([]string{"work", "/mnt/e", "-f"}); err != nil || !fake || strings.Join(got, " ") != "mount --daemon --profile work /mnt/e" {
		t.Errorf("-f: %q, fake %v, %v", got, fake, err)
	}
}

// TestKnownFlagsExist checks every flag the helper passes on against the
// real `evofs mount -h` output, so the two cannot drift apart.
func TestKnownFlagsExist(t *testing.T) {
	out, _ := exec.Command("go", "run", "evofs/cmd/evofs", "mount", "-h").CombinedOutput()
	if !strings.Contains(string(out), "evofs mount [flags] MOUNTPOINT") {
		t.Skipf("cannot run evofs mount -h: %s", out)
	}
	for k := range knownFlags {
		if !strings.Contains(string(out), " --"+k+" ") && !strings.Contains(string(out), " --"+k+"[") {
			t.Errorf("evofs mount has no --%s flag", k)
		}
	}
}
