package remote

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
)

func TestEscapePathExamples(t *testing.T) {
	for in, want := range map[string]string{
		"a b/c#d":           "a%20b/c%23d",
		"/x/y.txt":          "x/y.txt",
		"100%/q?.csv":       "100%25/q%3F.csv",
		"a%2Fb":             "a%252Fb",
		"plus+amp&eq=":      "plus+amp&eq=",
		"ünï/日本.txt":        "%C3%BCn%C3%AF/%E6%97%A5%E6%9C%AC.txt",
		`back\slash:*"<>|`:  "back%5Cslash:%2A%22%3C%3E%7C",
		"semi;comma,":       "semi%3Bcomma%2C",
		"tab\tinside name ": "tab%09inside%20name%20",
	} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidatePath(t *testing.T) {
	ok := []string{"a", "/a/b c/d.txt", "#?%&+\\:*\"<>|", "日本/語", strings.Repeat("x", 255)}
	for _, p := range ok {
		if err := ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want nil", p, err)
		}
	}
	bad := []string{"", "/", "a/", "a//b", "./a", "a/../b", " a", "a ", "a/b /c", "a\x01b", "a\x7fb",
		strings.Repeat("x", 256), strings.Repeat("a/", 2100) + "a", "\xff"}
	for _, p := range bad {
		if err := ValidatePath(p); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ValidatePath(%q) = %v, want ErrInvalidPath", p, err)
		}
	}
	if err := ValidateName(strings.Repeat("é", 256)); !errors.Is(err, ErrNameTooLong) || !errors.Is(err, ErrInvalidPath) {
		t.Errorf("256 characters: %v, want ErrNameTooLong and ErrInvalidPath", err)
	}
	if err := ValidateName(strings.Repeat("é", 255)); err != nil {
		t.Errorf("255 two-byte characters: %v", err)
	}
}

// TestRequestURLKeepsEscapes checks that the URL the client sends carries
// each escaped segment byte for byte (net/http neither decodes %2F-looking
// text nor re-encodes anything).
func TestRequestURLKeepsEscapes(t *testing.T) {
	c := &Client{cfg: Config{BaseURL: "http://127.0.0.1:1/prefix", Org: uuid.New(), Workspace: uuid.New()}}
	for _, p := range []string{"a%2Fb", "dir/a b#c?d%e", "ü/;,/x+y", "%41"} {
		esc := EscapePath(p)
		u, err := c.requestURL("/files/path/"+esc, url.Values{"version_id": {"12"}})
		if err != nil {
			t.Fatal(err)
		}
		want := "/prefix/files/path/" + esc + "?version_id=12"
		if got := u.RequestURI(); got != want {
			t.Errorf("%q: RequestURI %q, want %q", p, got, want)
		}
		if got := u.String(); got != "http://127.0.0.1:1"+want {
			t.Errorf("%q: String %q", p, got)
		}
	}
}

func FuzzEscapePath(f *testing.F) {
	for _, s := range []string{"", "a", "a/b", "/lead", "a b", "a%2Fb", "100%", "%zz", "#?", "ü/日本",
		"a//b", "+&=;,:@$", "\x00\x1f\x7f", "\xff\xfe", "trail/", "..", "a/./b", "~-._"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		esc := EscapePath(p)
		// Round trip.
		back, err := UnescapePath(esc)
		if err != nil {
			t.Fatalf("UnescapePath(EscapePath(%q)=%q): %v", p, esc, err)
		}
		if want := strings.TrimPrefix(p, "/"); back != want {
			t.Fatalf("round trip of %q gave %q", want, back)
		}
		// Slashes are exactly the separators; nothing needs escaping twice.
		if strings.Count(esc, "/") != strings.Count(strings.TrimPrefix(p, "/"), "/") {
			t.Fatalf("EscapePath(%q)=%q changed the segment count", p, esc)
		}
		if strings.HasPrefix(esc, "/") && p != "" && !strings.HasPrefix(strings.TrimPrefix(p, "/"), "/") {
			t.Fatalf("EscapePath(%q)=%q has a leading slash", p, esc)
		}
		for i := 0; i < len(esc); i++ {
			ch := esc[i]
			switch {
			case ch == '%':
				if i+2 >= len(esc) || !isHex(esc[i+1]) || !isHex(esc[i+2]) {
					t.Fatalf("EscapePath(%q)=%q: bad escape at %d", p, esc, i)
				}
			case ch <= ' ' || ch >= 0x7f || strings.IndexByte("?#\"<>\\^`{|}[]", ch) >= 0:
				t.Fatalf("EscapePath(%q)=%q: unescaped byte %q", p, esc, ch)
			}
		}
		// Go's URL machinery keeps the escaped form as sent and decodes it to p.
		u, err := url.Parse("http://h/" + esc)
		if err != nil {
			t.Fatalf("url.Parse of %q: %v", esc, err)
		}
		if u.EscapedPath() != "/"+esc {
			t.Fatalf("EscapedPath %q, want %q", u.EscapedPath(), "/"+esc)
		}
		if u.Path != "/"+strings.TrimPrefix(p, "/") {
			t.Fatalf("decoded path %q, want %q", u.Path, "/"+strings.TrimPrefix(p, "/"))
		}
		// A valid path stays valid segment by segment, and folding is per segment.
		if ValidatePath(p) == nil {
			if !utf8.ValidString(p) {
				t.Fatalf("ValidatePath accepted invalid UTF-8 %q", p)
			}
			if strings.Count(FoldPath(p), "/") != strings.Count(p, "/") {
				t.Fatalf("FoldPath(%q) changed the segment count", p)
			}
		}
	})
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}
