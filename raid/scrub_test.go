package raid_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// scrubGeometries are the redundant layouts scrub is checked on.
var scrubGeometries = []geometry{
	{"raid1", 2, 64 << 10},
	{"mirror:3", 3, 8 << 10},
	{"raid10", 4, 16 << 10},
	{"raid5", 4, 16 << 10},
	{"raid6", 6, 4 << 10},
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// TestScrubFindsAndRepairsRot rots blocks on the members (in some columns
// as many members as the layout survives), then: a check-only scrub finds
// every rotten block, by member, and changes nothing; a repairing scrub
// finds and repairs them all; a scrub after it finds nothing; and the
// members agree on disk with the model.
func TestScrubFindsAndRepairsRot(t *testing.T) {
	for _, g := range scrubGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: volSize}
			a, m := filled(t, c, g.members, raid.Options{})
			l := a.Vol.Layout()
			a.Close(t)

			// The model of the rot: blocks by slot.
			want := make([]int64, g.members)
			stripes := int64(volSize) / (int64(l.Data) * c.Chunk)
			seen := map[[2]int64]bool{}
			for range 60 {
				s, b := rng.Int64N(stripes), rng.Int64N(c.Chunk/bs)
				if seen[[2]int64{s, b}] {
					continue
				}
				seen[[2]int64{s, b}] = true
				for _, shard := range pickSlots(rng, l, 1+rng.IntN(l.Redundancy()), true) {
					slot := l.Slot(s, shard)
					rot(t, a.Dirs[slot], s*c.Chunk+b*bs, rng)
					want[slot]++
				}
			}

			a.Open(t, a.Dirs...)
			for range 2 { // a check changes nothing: the second finds the same
				res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res.Bad, want) || sum(res.Repaired) != 0 || len(res.Lost) != 0 {
					t.Fatalf("check scrub: bad %v repaired %v lost %v, want bad %v and nothing repaired or lost", res.Bad, res.Repaired, res.Lost, want)
				}
				if res.Bytes != volSize {
					t.Fatalf("check scrub covered %d bytes, want %d", res.Bytes, volSize)
				}
			}
			res, err := a.Vol.Scrub(0, a.Vol.Stripes(), false)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Bad, want) || !slices.Equal(res.Repaired, want) {
				t.Fatalf("repairing scrub: bad %v repaired %v, want both %v", res.Bad, res.Repaired, want)
			}
			res, err = a.Vol.Scrub(0, a.Vol.Stripes(), true)
			if err != nil {
				t.Fatal(err)
			}
			if sum(res.Bad) != 0 {
				t.Fatalf("scrub after the repair found %v bad blocks", res.Bad)
			}
			raidtest.Expect(t, a.Vol, m, 0, volSize)
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
			raidtest.CheckConsistent(t, c, a.Dirs)
		})
	}
}

// TestScrubRecordsLostData rots one data block beyond redundancy: the scrub
// goes on, records the block as lost (reads of it fail, with an event),
// repairs the rot elsewhere, and a write over the block clears the record.
func TestScrubRecordsLostData(t *testing.T) {
	for _, g := range scrubGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: volSize}
			events := make(chan raid.Event, 10000)
			a, m := filled(t, c, g.members, raid.Options{OnEvent: func(e raid.Event) { events <- e }})
			l := a.Vol.Layout()
			a.Close(t)
			stripes := int64(volSize) / (int64(l.Data) * c.Chunk)
			s, b, d := rng.Int64N(stripes), rng.Int64N(c.Chunk/bs), rng.IntN(l.Data)
			for cp := range l.Copies {
				rot(t, a.Dirs[l.Slot(s, d*l.Copies+cp)], s*c.Chunk+b*bs, rng)
			}
			for p := range l.Parity {
				rot(t, a.Dirs[l.Slot(s, l.Data+p)], s*c.Chunk+b*bs, rng)
			}
			// And a block within redundancy elsewhere, which is repaired.
			s2 := (s + 1) % stripes
			rot(t, a.Dirs[l.Slot(s2, 0)], s2*c.Chunk, rng)
			a.Open(t, a.Dirs...)

			bad := s*int64(l.Data)*c.Chunk + int64(d)*c.Chunk + b*bs
			res, err := a.Vol.Scrub(0, a.Vol.Stripes(), false)
			if err != nil {
				t.Fatalf("scrub stopped at lost data: %v", err)
			}
			wantLost := []raid.Extent{{Off: bad, Len: bs}}
			if !slices.Equal(res.Lost, wantLost) || !slices.Equal(a.Vol.Lost(), wantLost) {
				t.Fatalf("lost: scrub reported %v, volume records %v, want %v", res.Lost, a.Vol.Lost(), wantLost)
			}
			if res.Repaired[l.Slot(s2, 0)] == 0 {
				t.Fatalf("the rot within redundancy was not repaired: %v", res.Repaired)
			}
			lost := false
			for len(events) > 0 {
				lost = lost || (<-events).Kind == "lost"
			}
			if !lost {
				t.Fatal("no lost event recorded")
			}
			// A second scrub reports the same loss but records nothing new.
			if res, err = a.Vol.Scrub(0, a.Vol.Stripes(), false); err != nil || !slices.Equal(res.Lost, wantLost) {
				t.Fatalf("second scrub: lost %v, %v", res.Lost, err)
			}
			for len(events) > 0 {
				if e := <-events; e.Kind == "lost" {
					t.Fatalf("a known loss was recorded again: %v", e)
				}
			}
			// Reads of the range fail even where a copy would now pass
			// (a repairing scrub cannot prove it); around it they succeed.
			if _, err := a.Vol.ReadAt(make([]byte, 100), bad+50); !errors.Is(err, raid.ErrUnrecoverable) {
				t.Fatalf("read of the lost block = %v, want ErrUnrecoverable", err)
			}
			raidtest.Expect(t, a.Vol, m, 0, bad)
			raidtest.Expect(t, a.Vol, m, bad+bs, volSize-bad-bs)

			// The record survives a restart; a write over it clears it.
			a.Open(t, a.Dirs...)
			if !slices.Equal(a.Vol.Lost(), wantLost) {
				t.Fatalf("after reopening, lost = %v, want %v", a.Vol.Lost(), wantLost)
			}
			p := make([]byte, bs)
			raidtest.Fill(rng, p)
			if _, err := a.Vol.WriteAt(p, bad); err != nil {
				t.Fatal(err)
			}
			copy(m[bad:], p)
			if got := a.Vol.Lost(); len(got) != 0 {
				t.Fatalf("after a write over it, lost = %v", got)
			}
			raidtest.Expect(t, a.Vol, m, 0, volSize)
			a.Open(t, a.Dirs...)
			if got := a.Vol.Lost(); len(got) != 0 {
				t.Fatalf("after reopening, lost = %v", got)
			}
			if res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true); err != nil || sum(res.Bad) != 0 || len(res.Lost) != 0 {
				t.Fatalf("final check scrub: bad %v lost %v, %v", res.Bad, res.Lost, err)
			}
		})
	}
}

// TestScrubWaitsForASlowMember rots blocks on a member that then turns slow
// and sits out of reads: foreground reads go around it, but a scrub reads
// it all the same, finds every rotten block on it and repairs them.
func TestScrubWaitsForASlowMember(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
	}{{"raid1", 2}, {"raid5", 4}, {"raid6", 5}} {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			ev := make(events, 10000)
			rng := seeded(t)
			c := raid.Config{Layout: g.layout, Chunk: 64 << 10, Size: 2 << 20}
			a, m := filled(t, c, g.members, raid.Options{Policy: slowPolicy(3), OnEvent: ev.on})
			stripes := a.Vol.Stripes()
			from := stripes/2 + 1 // the rotten half, which the scrubs cover
			a.Close(t)
			// Rot member 0 in the second half of the volume; the reads that
			// make it sit out stay in the first half, so none meets the rot.
			want := make([]int64, g.members)
			for s := from; s < stripes; s += 2 {
				rot(t, a.Dirs[0], s*c.Chunk+rng.Int64N(c.Chunk/bs)*bs, rng)
				want[0]++
			}
			a.Open(t, a.Dirs...)
			a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 100 * time.Millisecond})
			for i := 0; !a.Vol.Status().Members[0].SitOut; i++ {
				if i == 400 {
					t.Fatalf("member 0 never sat out: %+v", a.Vol.Status().Members[0])
				}
				off, n := raidtest.RandomRange(rng, c.Size/4, 64<<10)
				raidtest.Expect(t, a.Vol, m, off, n)
			}
			ev.waitFor(t, "sit-out", 0)
			for _, check := range []bool{true, false} {
				res, err := a.Vol.Scrub(from, stripes, check)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res.Bad, want) || (check && sum(res.Repaired) != 0) || (!check && !slices.Equal(res.Repaired, want)) {
					t.Fatalf("scrub (check %v) beside a member sitting out: bad %v repaired %v, want %v found", check, res.Bad, res.Repaired, want)
				}
			}
			if res, err := a.Vol.Scrub(from, stripes, true); err != nil || sum(res.Bad) != 0 {
				t.Fatalf("scrub after the repair: bad %v, %v", res.Bad, err)
			}
			raidtest.Expect(t, a.Vol, m, 0, c.Size)
			a.Fault(0).Clear()
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
		})
	}
}
