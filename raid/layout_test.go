package raid

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/klauspost/reedsolomon"
)

func TestParseLayout(t *testing.T) {
	cases := []struct {
		name                          string
		members, data, copies, parity int
		redundancy                    int
	}{
		{"raid0", 4, 4, 1, 0, 0},
		{"raid1", 2, 1, 2, 0, 1},
		{"mirror:3", 3, 1, 3, 0, 2},
		{"raid10", 6, 3, 2, 0, 1},
		{"raid5", 4, 3, 1, 1, 1},
		{"raid6", 6, 4, 1, 2, 2},
		{"rs:10+4", 14, 10, 1, 4, 4},
	}
	for _, c := range cases {
		l, err := ParseLayout(c.name, c.members)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if l.Data != c.data || l.Copies != c.copies || l.Parity != c.parity || l.Redundancy() != c.redundancy ||
			l.Data*l.Copies+l.Parity != l.Members {
			t.Fatalf("%s: %+v", c.name, l)
		}
	}
	for _, bad := range []string{"", "raid7", "mirror:1", "mirror:x", "rs:4", "rs:0+2", "rs:4+0", "rs:a+b", "rs:255+2"} {
		if _, err := ParseLayout(bad, 4); !errors.Is(err, ErrBadLayout) && !errors.Is(err, ErrTooFewMembers) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

// TestSurvivesAgainstCounting checks Survives against a dumb rule: data
// survives iff every data chunk of every stripe keeps enough shards.
func TestSurvivesAgainstCounting(t *testing.T) {
	for _, c := range []struct {
		name    string
		members int
	}{{"raid0", 3}, {"raid1", 2}, {"mirror:3", 3}, {"raid10", 6}, {"raid5", 4}, {"raid6", 6}} {
		l, _ := ParseLayout(c.name, c.members)
		for mask := 0; mask < 1<<c.members; mask++ {
			present := make([]bool, c.members)
			for i := range present {
				present[i] = mask&(1<<i) != 0
			}
			want := true
			for s := int64(0); s < int64(c.members); s++ {
				alive := 0
				for i := range l.Members {
					if present[l.Slot(s, i)] {
						alive++
					}
				}
				if l.Parity > 0 {
					want = want && alive >= l.Data
					continue
				}
				for d := range l.Data {
					ok := false
					for cp := range l.Copies {
						ok = ok || present[l.Slot(s, d*l.Copies+cp)]
					}
					want = want && ok
				}
			}
			if got := l.Survives(present); got != want {
				t.Fatalf("%s with %v: Survives = %v, counting says %v", c.name, present, got, want)
			}
		}
	}
}

// FuzzExtents checks the request splitter against a byte-by-byte locate.
func FuzzExtents(f *testing.F) {
	f.Add(uint8(3), uint8(1), uint8(2), uint8(0), int64(0), int64(4096))
	f.Add(uint8(4), uint8(2), uint8(1), uint8(1), int64(12345), int64(100000))
	f.Add(uint8(2), uint8(0), uint8(1), uint8(4), int64(65535), int64(2))
	f.Fuzz(func(t *testing.T, data, parity, copies, chunkShift uint8, off, n int64) {
		l := Layout{Name: "fuzz", Data: 1 + int(data%8), Parity: int(parity % 3), Copies: 1 + int(copies%3)}
		l.Members = l.Data*l.Copies + l.Parity
		chunk := int64(4096) << (chunkShift % 5)
		g := newGeometry(l, chunk, 64*chunk*int64(l.Data))
		if off < 0 || n <= 0 || off >= g.size {
			return
		}
		n = min(n, g.size-off, 1<<18)
		pos := int64(0)
		for _, e := range g.extents(off, n) {
			if e.pos != pos || e.n <= 0 || e.off+e.n > chunk {
				t.Fatalf("extent %+v at request position %d", e, pos)
			}
			for _, k := range []int64{0, e.n - 1} {
				s, d, in := g.locate(off + e.pos + k)
				if s != e.stripe || d != e.d || in != e.off+k {
					t.Fatalf("byte %d: extent says (%d,%d,%d), locate says (%d,%d,%d)", off+e.pos+k, e.stripe, e.d, e.off+k, s, d, in)
				}
			}
			pos += e.n
		}
		if pos != n {
			t.Fatalf("extents cover %d bytes of %d", pos, n)
		}
		// Every stripe's shards land on distinct members.
		s := off / g.stripeData()
		seen := map[int]bool{}
		for i := range l.Members {
			seen[l.Slot(s, i)] = true
		}
		if len(seen) != l.Members {
			t.Fatalf("stripe %d maps %d shards to %d members", s, l.Members, len(seen))
		}
	})
}

// FuzzDecodeLabel checks that any input either decodes to a valid label that
// survives a round trip, or fails with ErrCorruptLabel — never a panic.
func FuzzDecodeLabel(f *testing.F) {
	good := Label{Magic: labelMagic, Version: labelVersion, ArrayUUID: newUUID(), ArrayName: "a",
		MemberUUID: newUUID(), Slot: 1, Layout: "raid5", Members: 3, Chunk: 65536, Size: 1 << 20, Generation: 4}
	f.Add(good.Encode())
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"magic":"lockstep-member","version":1,"slot":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLabel(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptLabel) {
				t.Fatalf("error %v does not wrap ErrCorruptLabel", err)
			}
			return
		}
		again, err := DecodeLabel(l.Encode())
		if err != nil || again != l {
			t.Fatalf("round trip: %+v -> %+v, %v", l, again, err)
		}
	})
}

// TestParityIsPinned fails if a codec upgrade or option change alters the
// parity bytes written for the same data: that would make existing arrays
// unreadable. It runs with the CPU's SIMD and without, which must agree.
func TestParityIsPinned(t *testing.T) {
	noSIMD := []reedsolomon.Option{reedsolomon.WithAVX2(false), reedsolomon.WithAVX512(false),
		reedsolomon.WithGFNI(false), reedsolomon.WithAVXGFNI(false), reedsolomon.WithSSSE3(false), reedsolomon.WithSSE2(false)}
	for _, simd := range []bool{true, false} {
		for _, c := range []struct {
			k, m int
			want string
		}{
			{2, 1, "bda4a2ef71e14fb2eadc783cd4d78803f4e3ae1badd69095932c97465451ad79"},
			{4, 2, "44426dc256108a62795cb85983c0df0bbce103b0b0ce2b0f7a47a4f9ad705a13"},
			{10, 4, "4a875f995ceda61027fea8b8a5a99e20dceb9edb2307dfe63424b64ed3db3d9b"},
		} {
			var opts []reedsolomon.Option
			if !simd {
				opts = noSIMD
			}
			enc, err := newCodec(c.k, c.m, opts...)
			if err != nil {
				t.Fatal(err)
			}
			shards := make([][]byte, c.k+c.m)
			for i := range shards {
				shards[i] = make([]byte, 4096)
				if i < c.k {
					for j := range shards[i] {
						shards[i][j] = byte(i*131 + j*7 + j>>8)
					}
				}
			}
			if err := enc.Encode(shards); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			for _, p := range shards[c.k:] {
				h.Write(p)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != c.want {
				t.Errorf("rs:%d+%d (SIMD %v) parity hash = %s, pinned %s", c.k, c.m, simd, got, c.want)
			}
		}
	}
}
