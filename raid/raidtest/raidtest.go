// Package raidtest is the harness for testing volumes: a flat byte-slice
// model of what was written, a helper that makes a test array with a fault
// wrapper under every member, and an independent check of the members'
// on-disk contents.
package raidtest

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/klauspost/reedsolomon"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
)

// Array is a test array: its member directories, the open volume, and the
// fault wrapper under each member's checksum layer.
type Array struct {
	Dirs   []string
	Config raid.Config
	Direct bool // open the members with O_DIRECT
	// Options are passed to raid.Open (Wrap and Direct are the harness's).
	Options raid.Options
	Vol     *raid.Volume

	mu        sync.Mutex
	faults    []*blockdev.Faulty // by slot; nil for members not open
	faultDirs []string           // the member directory each wrapper is for
}

// New creates an array of the given layout over members directories in a
// temporary folder and opens it, with opts if given. The volume is closed at
// cleanup.
func New(t testing.TB, c raid.Config, members int, opts ...raid.Options) *Array {
	t.Helper()
	root := t.TempDir()
	a := &Array{Config: c}
	if len(opts) > 0 {
		a.Options = opts[0]
	}
	for i := range members {
		a.Dirs = append(a.Dirs, filepath.Join(root, fmt.Sprintf("m%d", i)))
	}
	if _, err := raid.Create(a.Dirs, c); err != nil {
		t.Fatalf("Create(%s): %v", c.Layout, err)
	}
	a.Open(t, a.Dirs...)
	t.Cleanup(func() {
		if a.Vol != nil {
			a.Vol.Close()
		}
	})
	return a
}

// Open (re)opens the volume on the given member directories, with fresh
// fault wrappers.
func (a *Array) Open(t testing.TB, dirs ...string) {
	t.Helper()
	if a.Vol != nil {
		if err := a.Vol.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		a.Vol = nil
	}
	a.mu.Lock()
	a.faults = make([]*blockdev.Faulty, len(a.Dirs))
	a.faultDirs = make([]string, len(a.Dirs))
	a.mu.Unlock()
	o := a.Options
	o.Direct = o.Direct || a.Direct
	inner := a.Options.Wrap
	o.Wrap = func(slot int, dir string, d blockdev.Device) blockdev.Device {
		if inner != nil {
			d = inner(slot, dir, d) // the test's own wrapper, below the faults
		}
		// A restart reopens the member: its disk's faults stay with it. A
		// new disk in the slot (a spare taking over) starts without any.
		a.mu.Lock()
		defer a.mu.Unlock()
		faults := blockdev.NewFaults(uint64(slot) + 1)
		if old := a.faults[slot]; old != nil && a.faultDirs[slot] == dir {
			faults = old.Faults
		}
		a.faults[slot], a.faultDirs[slot] = faults.Wrap(d), dir
		return a.faults[slot]
	}
	v, err := raid.Open(dirs, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	a.Vol = v
}

// Fault returns the fault wrapper under a member's checksum layer.
func (a *Array) Fault(slot int) *blockdev.Faulty {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.faults[slot]
}

// Close closes the volume.
func (a *Array) Close(t testing.TB) {
	t.Helper()
	if err := a.Vol.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	a.Vol = nil
}

// Model is the reference: the bytes the volume must hold.
type Model []byte

// Fill writes random bytes to p.
func Fill(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(p) / 8 * 8; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
}

// RandomRange returns an offset and length within size, unaligned, of at
// most maxLen bytes; a quarter of them are block-aligned.
func RandomRange(rng *rand.Rand, size, maxLen int64) (int64, int64) {
	n := 1 + rng.Int64N(maxLen)
	off := rng.Int64N(size)
	if rng.IntN(4) == 0 {
		n = (n + blockdev.BlockSize - 1) / blockdev.BlockSize * blockdev.BlockSize
		off = off / blockdev.BlockSize * blockdev.BlockSize
	}
	return off, min(n, size-off)
}

// Expect reads n bytes at off and fails the test unless they equal the
// model's.
func Expect(t testing.TB, v *raid.Volume, m Model, off, n int64) {
	t.Helper()
	got := make([]byte, n)
	if _, err := v.ReadAt(got, off); err != nil {
		t.Fatalf("ReadAt(%d bytes at %d): %v", n, off, err)
	}
	if i := firstDiff(got, m[off:off+n]); i >= 0 {
		t.Fatalf("ReadAt(%d bytes at %d) differs from the model at volume offset %d", n, off, off+int64(i))
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// MemberOffset is a dumb, independent placement oracle: where volume byte
// off lives, as (data chunk copy or shard index, slot, member offset).
func MemberOffset(l raid.Layout, chunk, off int64) (stripe int64, d int, memberOff int64) {
	sd := int64(l.Data) * chunk
	stripe = off / sd
	d = int(off % sd / chunk)
	return stripe, d, stripe*chunk + off%chunk
}

// ReadMembers reads every member's raw data file, by slot (nil where the
// directory is gone).
func ReadMembers(t testing.TB, dirs []string) [][]byte {
	t.Helper()
	out := make([][]byte, len(dirs))
	for i, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, blockdev.DataFile))
		if err != nil {
			t.Fatalf("read member %d: %v", i, err)
		}
		out[i] = b
	}
	return out
}

// CheckOnDisk checks a closed, healthy array's raw member files against the
// model with an independent implementation: every volume byte sits where
// the dumb placement says in every copy, and every parity chunk is what a
// plain Reed-Solomon encode of its stripe gives. dirs are in slot order.
func CheckOnDisk(t testing.TB, c raid.Config, dirs []string, m Model) {
	t.Helper()
	l, err := raid.ParseLayout(c.Layout, len(dirs))
	if err != nil {
		t.Fatal(err)
	}
	chunk := c.Chunk
	raw := ReadMembers(t, dirs)
	// Data: block by block through the dumb mapper.
	for off := int64(0); off < int64(len(m)); off += blockdev.BlockSize {
		s, d, mo := MemberOffset(l, chunk, off)
		n := min(blockdev.BlockSize, int64(len(m))-off)
		for c := range l.Copies {
			slot := l.Slot(s, d*l.Copies+c)
			if !bytes.Equal(raw[slot][mo:mo+n], m[off:off+n]) {
				t.Fatalf("on disk: volume offset %d (stripe %d chunk %d copy %d) differs on slot %d", off, s, d, c, slot)
			}
		}
	}
	checkParity(t, l, chunk, raw)
}

// checkParity checks every parity chunk of raw member contents against a
// plain Reed-Solomon encode of its stripe.
func checkParity(t testing.TB, l raid.Layout, chunk int64, raw [][]byte) {
	t.Helper()
	if l.Parity == 0 {
		return
	}
	enc, err := reedsolomon.New(l.Data, l.Parity)
	if err != nil {
		t.Fatal(err)
	}
	for s := range int64(len(raw[0])) / chunk {
		shards := make([][]byte, l.Members)
		for i := range shards {
			shards[i] = raw[l.Slot(s, i)][s*chunk : (s+1)*chunk]
		}
		if ok, err := enc.Verify(shards); err != nil || !ok {
			t.Fatalf("on disk: parity of stripe %d does not match its data (err %v)", s, err)
		}
	}
}

// CheckConsistent checks a closed, healthy array on disk without a model,
// as a check-only scrub would: every block matches the checksum on record
// in its member, the copies of each mirrored chunk are identical, and every
// parity chunk is what a plain Reed-Solomon encode of its stripe gives.
// dirs are in slot order.
func CheckConsistent(t testing.TB, c raid.Config, dirs []string) {
	t.Helper()
	l, err := raid.ParseLayout(c.Layout, len(dirs))
	if err != nil {
		t.Fatal(err)
	}
	raw := ReadMembers(t, dirs)
	for slot, dir := range dirs {
		m, err := blockdev.OpenMember(dir, false)
		if err != nil {
			t.Fatalf("open member %d: %v", slot, err)
		}
		sums := make([]uint32, len(raw[slot])/blockdev.BlockSize)
		err = m.Sums.Lookup(0, sums)
		m.Close()
		if err != nil {
			t.Fatalf("member %d checksums: %v", slot, err)
		}
		for b, want := range sums {
			if got := blockdev.Checksum(raw[slot][b*blockdev.BlockSize : (b+1)*blockdev.BlockSize]); got != want {
				t.Fatalf("member %d block %d: checksum %08x on disk, %08x on record", slot, b, got, want)
			}
		}
	}
	stripes := int64(len(raw[0])) / c.Chunk
	if l.Parity == 0 {
		for s := range stripes {
			for d := range l.Data {
				first := raw[l.Slot(s, d*l.Copies)][s*c.Chunk : (s+1)*c.Chunk]
				for cp := 1; cp < l.Copies; cp++ {
					if !bytes.Equal(first, raw[l.Slot(s, d*l.Copies+cp)][s*c.Chunk:(s+1)*c.Chunk]) {
						t.Fatalf("stripe %d chunk %d: copy %d differs from copy 0", s, d, cp)
					}
				}
			}
		}
		return
	}
	checkParity(t, l, c.Chunk, raw)
}

// Main is a TestMain for the packages with benchmarks: benchmarks run with
// the GOMAXPROCS that lockstep mount uses (raid.UseProcs), so that their
// figures are the mount's; tests run with the runtime's default.
func Main(m *testing.M) {
	flag.Parse()
	if b := flag.Lookup("test.bench"); b != nil && b.Value.String() != "" {
		raid.UseProcs()
	}
	os.Exit(m.Run())
}
