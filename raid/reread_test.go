package raid_test

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// TestReconstructWhenRereadSucceeds covers a read over two data chunks of a
// stripe, the end of one and the start of the next, whose first reads of
// both fail once. Reconstruction then reads the columns both spans touch
// again, whole; those reads succeed, so nothing is left to decode. The
// blocks the first reads could not prove must come from those second reads
// (a scrub repairing them in between, or a slow member answering the
// second time, does the same), not be left as the first reads left them.
func TestReconstructWhenRereadSucceeds(t *testing.T) {
	for _, tc := range []struct {
		layout  string
		members int
	}{{"raid5", 3}, {"raid6", 6}} {
		t.Run(tc.layout, func(t *testing.T) {
			rng := seeded(t)
			const chunk = 64 << 10
			c := raid.Config{Layout: tc.layout, Chunk: chunk, Size: volSize}
			a := raidtest.New(t, c, tc.members)
			l := a.Vol.Layout()
			m := make(raidtest.Model, volSize)
			raidtest.Fill(rng, m)
			if _, err := a.Vol.WriteAt(m, 0); err != nil {
				t.Fatal(err)
			}
			const s = 3 // the stripe read
			stripeOff := int64(s) * int64(l.Data) * chunk
			off, n := stripeOff+chunk/2, int64(chunk) // half of chunk 0, half of chunk 1
			first := int64(s) * chunk / bs            // the stripe's first block on a member
			rule := blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead, Start: first, End: first + chunk/bs, Count: 1}
			for d := range 2 {
				if err := a.Fault(l.Slot(s, d)).Add(rule); err != nil {
					t.Fatal(err)
				}
			}
			raidtest.Expect(t, a.Vol, m, off, n)
			for d := range 2 {
				if got := a.Vol.Status().Members[l.Slot(s, d)].Counters.ReadErrors; got != 1 {
					t.Errorf("data chunk %d's member counted %d read errors, want 1: the fault did not fire as planned", d, got)
				}
			}
		})
	}
}

// TestTransientReadFaults reads a redundant array whose every member fails or
// corrupts reads now and then, at random: a read fails, or a block it
// returns has a bit flipped on the way; and some members are slow now and
// then, so that reads hedged around them find them answering on the next
// try. Reads of random ranges, across chunks and stripes, must each return
// the model's bytes or fail as unrecoverable; never anything else. The
// policy fails no member, so every fault is met by the read path alone.
func TestTransientReadFaults(t *testing.T) {
	for _, tc := range []struct {
		layout  string
		members int
	}{{"mirror:3", 3}, {"raid10", 4}, {"raid5", 4}, {"raid6", 6}} {
		t.Run(tc.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: tc.layout, Chunk: 16 << 10, Size: volSize}
			pol := raid.DefaultPolicy()
			pol.FailureLevel = 0
			pol.SlowFloor = time.Millisecond
			pol.SlowIOs.Count = math.MaxInt32 // hedged, never sitting out
			a := raidtest.New(t, c, tc.members, raid.Options{Policy: pol})
			m := make(raidtest.Model, volSize)
			raidtest.Fill(rng, m)
			if _, err := a.Vol.WriteAt(m, 0); err != nil {
				t.Fatal(err)
			}
			redundancy := a.Vol.Layout().Redundancy()
			for slot := range tc.members {
				rules := []blockdev.Rule{
					{Kind: blockdev.FaultError, Ops: blockdev.OpRead, Prob: 0.05},
					{Kind: blockdev.FaultFlip, Ops: blockdev.OpRead, Prob: 0.05},
				}
				if slot < redundancy {
					// As many members as the array can do without are
					// slow now and then, so that their reads are hedged
					// and some answer too late.
					rules = append(rules, blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Prob: 0.25, Delay: 4 * time.Millisecond})
				}
				for _, r := range rules {
					if err := a.Fault(slot).Add(r); err != nil {
						t.Fatal(err)
					}
				}
			}
			served, failed := 0, 0
			for range 600 {
				off, n := raidtest.RandomRange(rng, volSize, 3*c.Chunk*int64(tc.members))
				got := make([]byte, n)
				_, err := a.Vol.ReadAt(got, off)
				switch {
				case errors.Is(err, raid.ErrUnrecoverable):
					failed++
				case err != nil:
					t.Fatalf("ReadAt(%d bytes at %d): %v, want the data or %v", n, off, err, raid.ErrUnrecoverable)
				default:
					if !bytes.Equal(got, m[off:off+n]) {
						t.Fatalf("ReadAt(%d bytes at %d) returned bytes the model does not hold, without an error", n, off)
					}
					served++
				}
			}
			var faults, slow int64
			for _, ms := range a.Vol.Status().Members {
				faults += ms.Counters.ReadErrors + ms.Counters.ChecksumErrors
				slow += ms.Counters.SlowIOs
			}
			if faults == 0 || slow == 0 || served == 0 {
				t.Fatalf("%d faults met, %d slow reads, %d reads served, %d unrecoverable: the test did not test", faults, slow, served, failed)
			}
			t.Logf("%d faults met, %d slow reads; %d reads served, %d unrecoverable", faults, slow, served, failed)
		})
	}
}
