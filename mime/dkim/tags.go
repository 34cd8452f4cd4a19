package dkim

import (
	"fmt"
	"strings"
)

// tag is one tag=value pair of an RFC 6376 §3.2 tag list. The value has
// its folding whitespace kept inside and trimmed at both ends.
type tag struct {
	name, value string
}

// maxTags bounds a tag list: real records and signatures have about a
// dozen; anything past this many is not DKIM.
const maxTags = 64

// parseTags parses an RFC 6376 §3.2 tag list:
//
//	tag-list  = tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  = [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//	tag-name  = ALPHA *ALNUMPUNC
//	tag-value = [ tval *( 1*(WSP / FWS) tval ) ]
//	tval      = 1*VALCHAR ; %x21-3A / %x3C-7E
//
// A duplicate tag name makes the whole list invalid (§3.2). The error says
// in words what is wrong and where.
func parseTags(s string) ([]tag, error) {
	var tags []tag
	specs := strings.Split(s, ";")
	if len(specs) > maxTags+1 {
		return nil, fmt.Errorf("more than %d tags", maxTags)
	}
	for i, spec := range specs {
		if isFWS(spec) {
			if i == len(specs)-1 {
				break // the optional trailing ";"
			}
			return nil, fmt.Errorf("empty tag %d (two ';' in a row?)", i+1)
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("tag %d (%q) has no '='", i+1, clip(strings.TrimSpace(spec)))
		}
		name = trimFWS(name)
		if !validTagName(name) {
			return nil, fmt.Errorf("tag %d: %q is not a tag name (a letter, then letters, digits or '_')", i+1, clip(name))
		}
		value = trimFWS(value)
		if j := badValueChar(value); j >= 0 {
			return nil, fmt.Errorf("tag %s: character %q is not allowed in a value", name, value[j])
		}
		for _, t := range tags {
			if t.name == name {
				return nil, fmt.Errorf("tag %s appears twice", name)
			}
		}
		tags = append(tags, tag{name, value})
	}
	return tags, nil
}

// lookup returns the value of the tag named name.
func lookup(tags []tag, name string) (string, bool) {
	for _, t := range tags {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

// badValueChar returns the index of the first byte of v that may not
// appear in a trimmed tag-value, or -1. Whitespace is allowed between
// value characters, and a line break (CRLF, or LF as in files) only when
// folding: followed by a space or tab.
func badValueChar(v string) int {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == ' ' || c == '\t':
		case c == '\r' || c == '\n':
			j := i
			if c == '\r' {
				j++
			}
			if j+1 >= len(v) || v[j] != '\n' || (v[j+1] != ' ' && v[j+1] != '\t') {
				return i
			}
			i = j
		case c >= 0x21 && c <= 0x7e && c != ';':
		default:
			return i
		}
	}
	return -1
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isFWS reports whether s is only folding whitespace (or empty).
func isFWS(s string) bool { return trimFWS(s) == "" }

// trimFWS trims spaces, tabs and line breaks at both ends.
func trimFWS(s string) string { return strings.Trim(s, " \t\r\n") }

// stripFWS removes every space, tab and line break (base64 values, tag
// lists of names).
func stripFWS(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n':
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// splitList splits a colon-separated value (h=, s=, t= and the like) into
// its trimmed, non-empty items.
func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ":") {
		if item = trimFWS(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
