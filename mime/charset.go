package mime

import (
	"fmt"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
)

// charsetMode says how a leaf's charset is handled.
type charsetMode int

const (
	// csBytes: ASCII-compatible in the strong sense that every byte below
	// 0x80 is that ASCII character and never part of a multibyte one, so
	// the rewriter can work on the bytes and leave all others as they are.
	csBytes charsetMode = iota
	// csConvert: decoded to UTF-8, rewritten, and encoded back; used for
	// charsets that are not ASCII-compatible (UTF-16/32, ISO-2022-*, HZ,
	// EBCDIC) and for multibyte charsets whose trail bytes can be ASCII
	// (Shift_JIS, Big5, GBK/GB18030, and EUC-KR, which x/text reads as
	// UHC/CP949): a byte-level rewriter could take such a trail byte for
	// a quote or a URL character and split the character.
	csConvert
	// csUnknown: no decoder; the leaf passes through.
	csUnknown
)

// lookupCharset resolves a charset label the way go-message's charset
// package does (IANA MIME names, then "cs" aliases, then the WHATWG
// labels), so the walker and go-message agree on what a label means.
func lookupCharset(label string) (charsetMode, encoding.Encoding) {
	name := strings.ToLower(strings.Trim(strings.TrimSpace(label), `"`))
	switch name {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "x-utf_8j":
		return csBytes, nil
	case "ansi_x3.110-1983":
		return csBytes, nil
	}
	enc, err := ianaindex.MIME.Encoding(name)
	if enc == nil {
		enc, err = ianaindex.MIME.Encoding("cs" + name)
	}
	if enc == nil {
		enc, err = htmlindex.Get(name)
	}
	if err != nil || enc == nil || enc == encoding.Replacement {
		return csUnknown, nil
	}
	if cm, ok := enc.(*charmap.Charmap); ok {
		for b := 0; b < 0x80; b++ {
			if cm.DecodeByte(byte(b)) != rune(b) {
				return csConvert, enc
			}
		}
		return csBytes, nil
	}
	switch fmt.Sprint(enc) {
	case "UTF-8", "US-ASCII", "EUC-JP":
		return csBytes, nil
	}
	return csConvert, enc
}
