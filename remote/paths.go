package remote

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// MaxNameLength is the longest file or folder name the service accepts, in characters.
const MaxNameLength = 255

// MaxPathBytes bounds a full path.
const MaxPathBytes = 4096

// ValidateName checks one path segment against the service's rules
// (file-api.md §9.6): not empty, not "." or "..", no "/", no control
// characters, no leading or trailing space, at most 255 characters.
// The error matches ErrInvalidPath, and also ErrNameTooLong when that is the reason.
func ValidateName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: name %q is not allowed", ErrInvalidPath, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name is not valid UTF-8", ErrInvalidPath)
	case utf8.RuneCountInString(name) > MaxNameLength:
		return &nameTooLongError{name: name}
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("%w: name %q contains a slash", ErrInvalidPath, name)
	case strings.HasPrefix(name, " ") || strings.HasSuffix(name, " "):
		return fmt.Errorf("%w: name %q begins or ends with a space", ErrInvalidPath, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: name %q contains a control character", ErrInvalidPath, name)
		}
	}
	return nil
}

type nameTooLongError struct{ name string }

func (e *nameTooLongError) Error() string {
	return fmt.Sprintf("name too long: %d characters, the service allows %d", utf8.RuneCountInString(e.name), MaxNameLength)
}

func (e *nameTooLongError) Is(target error) bool {
	return target == ErrNameTooLong || target == ErrInvalidPath
}

// ValidatePath checks a slash-separated path (leading slash optional).
func ValidatePath(p string) error {
	p = strings.TrimPrefix(p, "/")
	if len(p) > MaxPathBytes {
		return fmt.Errorf("%w: path longer than %d bytes", ErrInvalidPath, MaxPathBytes)
	}
	for _, seg := range strings.Split(p, "/") {
		if err := ValidateName(seg); err != nil {
			return err
		}
	}
	return nil
}

// EscapePath percent-encodes each segment of p (RFC 3986 path escaping, as
// url.PathEscape does) and joins them with literal slashes, without a
// leading slash: "a b/c#d" → "a%20b/c%23d".
func EscapePath(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// UnescapePath reverses EscapePath.
func UnescapePath(p string) (string, error) {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalidPath, err)
		}
		segs[i] = u
	}
	return strings.Join(segs, "/"), nil
}

// FoldName is the key under which the service matches a name: Unicode
// lower case. Two names with the same fold are the same file or folder.
func FoldName(name string) string { return strings.ToLower(name) }

// FoldPath folds every segment of a path.
func FoldPath(p string) string { return strings.ToLower(p) }
