package raid_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// memberBlock reads block-aligned bytes straight from a member's data file.
func memberBlock(t *testing.T, dir string, off int64) []byte {
	t.Helper()
	b := make([]byte, bs)
	f, err := os.Open(filepath.Join(dir, blockdev.DataFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFastReadRepairsInPlace(t *testing.T) {
	c := raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 3, raid.Options{})
	a.Close(t)
	l, _ := raid.ParseLayout(c.Layout, 3)
	// Rot data block 5 of stripe 2's chunk 1.
	const volOff = 2*2*(16<<10) + 16<<10 + 5*bs
	s, d, mo := raidtest.MemberOffset(l, c.Chunk, volOff)
	slot := l.Slot(s, d)
	rot(t, a.Dirs[slot], mo, seeded(t))
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, m, volOff, bs)
	if got := memberBlock(t, a.Dirs[slot], mo); !bytes.Equal(got, m[volOff:volOff+bs]) {
		t.Fatal("the read served the block but did not repair it on disk")
	}
	if r := a.Vol.Status().Members[slot].Counters.Repairs; r != 1 {
		t.Fatalf("repairs counted on member %d = %d, want 1", slot, r)
	}
	a.Close(t)
	raidtest.CheckOnDisk(t, c, a.Dirs, m)
}

func TestVoteOutvotesRogueMirror(t *testing.T) {
	for _, level := range []int{3, 4} {
		ev := make(events, 10000)
		pol := raid.DefaultPolicy()
		pol.FailureLevel = level
		pol.Mismatches = raid.Threshold{Count: 20, Window: time.Hour}
		pol.Restarts.Count = 1
		c := raid.Config{Layout: "mirror:3", Chunk: 16 << 10, Size: 1 << 20}
		a, m := filled(t, c, 3, raid.Options{ReadPolicy: raid.ReadVote, Policy: pol, OnEvent: ev.on})
		a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultRogue, Ops: blockdev.OpRead})
		rng := seeded(t)
		for range 200 {
			off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
			raidtest.Expect(t, a.Vol, m, off, n)
		}
		st := a.Vol.Status()
		if st.Members[1].Counters.ChecksumErrors == 0 || st.Members[0].Counters.ChecksumErrors != 0 || st.Members[2].Counters.ChecksumErrors != 0 {
			t.Fatalf("level %d: mismatches counted: %+v", level, st.Members)
		}
		if level == 3 && st.Members[1].State != "ONLINE" {
			t.Fatalf("level 3 fenced a member for mismatches: %+v", st.Members[1])
		}
		if level == 4 {
			// Reads go on (and stay right) until the member is fenced.
			for i := 0; !ev.seen("fence", 1); i++ {
				if i == 2000 {
					t.Fatalf("level 4: the rogue member was not fenced: %v", a.Vol.Events())
				}
				off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
				raidtest.Expect(t, a.Vol, m, off, n)
			}
			raidtest.Expect(t, a.Vol, m, 0, c.Size)
		}
	}
}

func TestChecksumArbitratesTwoCopies(t *testing.T) {
	c := raid.Config{Layout: "raid1", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 2, raid.Options{ReadPolicy: raid.ReadVote})
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultRogue, Ops: blockdev.OpRead, Start: 10, End: 40})
	a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultFlip, Ops: blockdev.OpRead, Start: 60, End: 90})
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	// Both copies lying about the same block: no majority, no checksum.
	a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultFlip, Ops: blockdev.OpRead, Start: 20, End: 21})
	if _, err := a.Vol.ReadAt(make([]byte, bs), 20*bs); err == nil {
		t.Fatal("a block both copies lie about was served")
	}
}

func TestRaid6LocatesTwoRoguesInDistinctStripes(t *testing.T) {
	for _, policy := range []raid.ReadPolicy{raid.ReadFast, raid.ReadVote} {
		c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
		a, m := filled(t, c, 6, raid.Options{ReadPolicy: policy})
		l := a.Vol.Layout()
		// Member 1 lies in stripe 3, member 4 in stripe 9 (member blocks:
		// 4 per 16 KiB chunk).
		a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultRogue, Ops: blockdev.OpRead, Start: 3 * 4, End: 4 * 4})
		a.Fault(4).Add(blockdev.Rule{Kind: blockdev.FaultRogue, Ops: blockdev.OpRead, Start: 9 * 4, End: 10 * 4})
		raidtest.Expect(t, a.Vol, m, 0, c.Size)
		st := a.Vol.Status()
		for slot, ms := range st.Members {
			liar := slot == 1 || slot == 4
			dataHere := false // whether the liar holds data (read by fast) in its stripe
			for d := range l.Data {
				dataHere = dataHere || (slot == 1 && l.Slot(3, d) == 1) || (slot == 4 && l.Slot(9, d) == 4)
			}
			if liar && (dataHere || policy == raid.ReadVote) && (ms.Counters.ChecksumErrors == 0 || ms.Counters.Repairs == 0) {
				t.Fatalf("%s: member %d lied and was not caught and repaired: %+v", policy, slot, ms.Counters)
			}
			if !liar && (ms.Counters.ChecksumErrors != 0 || ms.Counters.Repairs != 0) {
				t.Fatalf("%s: member %d was blamed: %+v", policy, slot, ms.Counters)
			}
		}
	}
}

// writeUnderneath changes a member's block with a valid checksum, as a write
// that reached one member before a crash would: only the parity can tell.
func writeUnderneath(t *testing.T, dir string, off int64, p []byte) {
	t.Helper()
	mb, err := blockdev.OpenMember(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blockdev.NewChecked(mb.Data, mb.Sums).WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestVoteChecksStripesAgainstParity(t *testing.T) {
	garbage := bytes.Repeat([]byte{0xee}, bs)
	// raid6: a data chunk that disagrees with both parities is located
	// and corrected.
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 5, raid.Options{ReadPolicy: raid.ReadVote})
	a.Close(t)
	l, _ := raid.ParseLayout(c.Layout, 5)
	const volOff = 7*3*(16<<10) + 2*(16<<10) + 3*bs // stripe 7, chunk 2, block 3
	s, d, mo := raidtest.MemberOffset(l, c.Chunk, volOff)
	writeUnderneath(t, a.Dirs[l.Slot(s, d)], mo, garbage)
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if st := a.Vol.Status(); st.Members[l.Slot(s, d)].Counters.Repairs != 1 {
		t.Fatalf("the located chunk was not repaired: %+v", st.Members)
	}
	a.Close(t)
	raidtest.CheckOnDisk(t, c, a.Dirs, m)

	// raid5: parity that disagrees with checksum-proven data is recomputed.
	c = raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}
	a, m = filled(t, c, 3, raid.Options{ReadPolicy: raid.ReadVote})
	a.Close(t)
	l, _ = raid.ParseLayout(c.Layout, 3)
	writeUnderneath(t, a.Dirs[l.Slot(4, l.Data)], 4*c.Chunk+bs, garbage)
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	a.Close(t)
	raidtest.CheckOnDisk(t, c, a.Dirs, m)
}
