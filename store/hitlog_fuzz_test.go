package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzHitLogSegment feeds arbitrary bytes as a log segment's records: the
// reader never panics, returns only records that pass their check, and
// records framed by appendRec in front of the noise read back exactly.
func FuzzHitLogSegment(f *testing.F) {
	f.Add([]byte{}, []byte("k"), []byte(`{"id":"k","kind":"click"}`))
	f.Add(appendRec(nil, 7, []byte("0000000000000001aaaaaaaa"), []byte("{}")), []byte("x"), []byte("y"))
	f.Add(bytes.Repeat([]byte{0xff}, 64), []byte("0000000000000002aaaaaaaa"), []byte(`{"kind":"pixel"}`))
	f.Fuzz(func(t *testing.T, noise, key, val []byte) {
		if len(key) == 0 || len(key) > 255 || len(val) > 4096 || len(noise) > 1<<16 {
			return
		}
		const gen = 7
		seg := append(segHeader(gen), appendRec(nil, gen, key, val)...)
		seg = append(seg, noise...)
		path := filepath.Join(t.TempDir(), "seg")
		if err := os.WriteFile(path, seg, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, logSegSize); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if g, err := segGen(fh); err != nil || g != gen {
			t.Fatalf("segGen %d %v", g, err)
		}
		var n int
		err = readSeg(fh, gen, 0, func(k, v []byte) error {
			if n == 0 && (!bytes.Equal(k, key) || !bytes.Equal(v, val)) {
				t.Fatalf("first record %q=%q, want %q=%q", k, v, key, val)
			}
			if len(k) == 0 {
				t.Fatal("record without a key")
			}
			n++
			return nil
		})
		if err != nil || n == 0 {
			t.Fatalf("readSeg: %d records, %v", n, err)
		}
		// Another generation's reader sees none of it.
		_ = readSeg(fh, gen+1, 0, func(k, v []byte) error {
			t.Fatal("record of another generation accepted")
			return nil
		})
	})
}
