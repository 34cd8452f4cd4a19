package store

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendStoredEvent appends e as encoding/json would marshal it, byte for
// byte (FuzzStoredEventJSON holds it to that): the relay encodes one per
// hit, and encoding/json's reflection and sorted map copy were a sixth of
// a hit's cost there. Stored events are still read with encoding/json.
func appendStoredEvent(b []byte, e *storedEvent) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendUint(b, e.ID, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, e.Time, 10)
	if e.Recipient != "" {
		b = append(b, `,"r":`...)
		b = AppendJSONString(b, e.Recipient)
	}
	if len(e.Tags) > 0 {
		b = append(b, `,"g":[`...)
		for i, t := range e.Tags {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, t)
		}
		b = append(b, ']')
	}
	if len(e.Fields) > 0 {
		var arr [8]string
		keys := arr[:0]
		for k := range e.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"f":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, k)
			b = append(b, ':')
			b = AppendJSONString(b, e.Fields[k])
		}
		b = append(b, '}')
	}
	if e.Key != "" {
		b = append(b, `,"k":`...)
		b = AppendJSONString(b, e.Key)
	}
	return append(b, '}')
}

// AppendJSONString appends s quoted as encoding/json quotes a string with
// HTML escaping on (its default): <, > and & as \u003c, \u003e and \u0026
// (so the output is safe inside HTML), U+2028 and U+2029 escaped, invalid
// UTF-8 as \ufffd. The REST API writes its event logs with it too.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
