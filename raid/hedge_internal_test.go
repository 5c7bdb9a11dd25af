package raid

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
)

// TestDoAnyLeavesLateReadsBehind: doAny returns once need reads have
// succeeded, with a stalled member's read marked left and missing; that
// read's buffer comes back through late once it ends, and the checksum
// error it then meets is not held against the member, while the same error
// met in time is.
func TestDoAnyLeavesLateReadsBehind(t *testing.T) {
	root := t.TempDir()
	var dirs []string
	for i := range 6 {
		dirs = append(dirs, filepath.Join(root, fmt.Sprint("m", i)))
	}
	c := Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	if _, err := Create(dirs, c); err != nil {
		t.Fatal(err)
	}
	faults := make([]*blockdev.Faulty, len(dirs))
	v, err := Open(dirs, Options{Wrap: func(slot int, _ string, d blockdev.Device) blockdev.Device {
		faults[slot] = blockdev.NewFaulty(d, uint64(slot)+1)
		return faults[slot]
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	data := make([]byte, c.Size)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	if _, err := v.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// What each member holds at the offset read, read beforehand.
	reads := func() []memIO {
		ios := make([]memIO, len(dirs))
		for i := range ios {
			ios[i] = memIO{slot: i, off: c.Chunk, buf: make([]byte, bs)}
		}
		return ios
	}
	want := reads()
	v.do(want, false)
	for i, io := range want {
		if io.err != nil {
			t.Fatalf("member %d: %v", i, io.err)
		}
	}
	checksums := func() int64 { return v.members[1].ctr.checksum.Load() }

	// Rot the block on member 1's disk, caught by a read in time.
	if err := faults[1].Add(blockdev.Rule{Kind: blockdev.FaultRot, Ops: blockdev.OpRead, Count: 1}); err != nil {
		t.Fatal(err)
	}
	v.do(reads()[1:2], false)
	if got := checksums(); got != 1 {
		t.Fatalf("a rotten block read in time: member 1 has %d checksum errors, want 1", got)
	}
	faults[1].Clear()

	if err := faults[1].Add(blockdev.Rule{Kind: blockdev.FaultStall, Ops: blockdev.OpRead}); err != nil {
		t.Fatal(err)
	}
	ios := reads()
	stalled := ios[1].buf
	ended := make(chan []byte, 1)
	left := v.doAny(ios, len(ios)-1, func(buf []byte) { ended <- buf })
	for i, io := range ios {
		switch {
		case i == 1 && (!left[i] || io.err != errMissing):
			t.Fatalf("the stalled read: left %v, err %v; want left, missing", left[i], io.err)
		case i != 1 && (left[i] || io.err != nil):
			t.Fatalf("member %d: left %v, err %v; want answered", i, left[i], io.err)
		case i != 1 && !bytes.Equal(io.buf, want[i].buf):
			t.Fatalf("member %d answered other bytes than it holds", i)
		}
	}
	faults[1].Clear()
	if buf := <-ended; &buf[0] != &stalled[0] {
		t.Fatal("late was handed another buffer than the late read's")
	}
	if got := checksums(); got != 1 {
		t.Fatalf("the late read of the rotten block: member 1 has %d checksum errors, want still 1", got)
	}
}
