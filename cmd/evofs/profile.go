package main

// Profiles: named sets of flag defaults in a small INI-style file, so that
// `evofs mount --profile work ~/Evo` is the whole command.
//
// File: $EVOFS_CONFIG, else evofs/config under the user's config dir
// ($XDG_CONFIG_HOME or ~/.config). Format:
//
//	# comments start with # or ;
//	[work]                      one section per profile
//	org = Acme Mining           keys are the long flag names of the command,
//	workspace = Drillholes      values the flag values (names or ids, sizes
//	client-id = 0oa1b2c3        in bytes, durations like 30s, booleans)
//	cache-size = 21474836480
//
// A flag given on the command line wins over the profile. Keys a command
// does not have (e.g. cache options for `evofs login`) are ignored there, so
// one profile serves every command. Without --profile, a section named
// [default] is used when there is one.

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/spf13/pflag"
	"os"
	"path/filepath"
	"strings"
)

// profileKeysAnywhere are valid in a profile even if the command at hand
// lacks them; any other unknown key is an error (a typo).
var profileKeysAnywhere = map[string]bool{"redirect-url": true, "timeout": true}

func configPath(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if p := os.Getenv(envConfig); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "evofs", "config"), nil
}

// loadProfiles parses a profiles file into section → key → value.
func loadProfiles(path string) (map[string]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string]string{}
	var cur map[string]string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			name := strings.TrimSpace(line[1 : len(line)-1])
			if name == "" {
				return nil, fmt.Errorf("%s:%d: empty profile name", path, n)
			}
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			cur = out[name]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected key = value", path, n)
		}
		if cur == nil {
			return nil, fmt.Errorf("%s:%d: %q is outside any [profile] section", path, n, strings.TrimSpace(k))
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "--")
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		cur[k] = v
	}
	return out, sc.Err()
}

// applyProfile sets, for every key of the profile, the flag of that name
// unless the command line set it. No --profile and no [default] section:
// nothing happens.
func applyProfile(fl *pflag.FlagSet, configFile, profile string) error {
	path, err := configPath(configFile)
	if err != nil {
		if profile == "" {
			return nil
		}
		return err
	}
	profiles, err := loadProfiles(path)
	if errors.Is(err, os.ErrNotExist) && profile == "" {
		return nil
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("profile %q: there is no profiles file at %s", profile, path)
		}
		return err
	}
	name := profile
	if name == "" {
		name = "default"
	}
	p, ok := profiles[name]
	if !ok {
		if profile == "" {
			return nil
		}
		return fmt.Errorf("there is no profile [%s] in %s", profile, path)
	}
	set := map[string]bool{}
	fl.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	for k, v := range p {
		if k == "profile" || k == "config" {
			continue
		}
		if fl.Lookup(k) == nil {
			if knownProfileKey(k) {
				continue
			}
			return fmt.Errorf("profile [%s] in %s: unknown key %q", name, path, k)
		}
		if set[k] {
			continue
		}
		if err := fl.Set(k, v); err != nil {
			return fmt.Errorf("profile [%s] in %s: %s = %s: %v", name, path, k, v, err)
		}
	}
	return nil
}

// knownProfileKey reports whether k is a flag of any evofs command.
func knownProfileKey(k string) bool {
	if profileKeysAnywhere[k] {
		return true
	}
	for _, mk := range []func() *pflag.FlagSet{mountFlagSetForKeys} {
		if mk().Lookup(k) != nil {
			return true
		}
	}
	return false
}

// mountFlagSetForKeys is a mount flag set used only to know the mount keys.
func mountFlagSetForKeys() *pflag.FlagSet {
	fl := pflag.NewFlagSet("keys", pflag.ContinueOnError)
	defineMountFlags(fl, &mountFlags{})
	return fl
}
