package raid_test

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// readCounter counts the bytes read from each member directory's data.
type readCounter struct {
	mu    sync.Mutex
	bytes map[string]int64
}

// wrap is a raid.Options.Wrap that counts the member's reads.
func (r *readCounter) wrap(_ int, dir string, d blockdev.Device) blockdev.Device {
	return &countedReads{Device: d, r: r, dir: dir}
}

// take returns the counts since the last take and starts again from zero.
func (r *readCounter) take() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.bytes
	r.bytes = map[string]int64{}
	return out
}

type countedReads struct {
	blockdev.Device
	r   *readCounter
	dir string
}

func (c *countedReads) ReadAt(p []byte, off int64) (int, error) {
	// A health probe's read (one block at 0) comes when it comes: left
	// out, so that the counts are the I/O's alone.
	if off != 0 || len(p) != blockdev.BlockSize {
		c.r.mu.Lock()
		c.r.bytes[c.dir] += int64(len(p))
		c.r.mu.Unlock()
	}
	return c.Device.ReadAt(p, off)
}

func total(counts map[string]int64) int64 { return sum(slices.Collect(maps.Values(counts))) }

// TestReplaceCopiesFromTheOldMember replaces a healthy member: until the
// rebuild is done the old one serves the reads of its slot (the array does
// not read degraded) and takes its writes, the rebuild copies
// from it alone, and the data always equals the model. Afterwards the
// members agree with the model on disk, and the old member is never used
// again.
func TestReplaceCopiesFromTheOldMember(t *testing.T) {
	for _, g := range rebuildGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			reads := &readCounter{bytes: map[string]int64{}}
			c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: rebuildSize}
			a, m := filled(t, c, g.members, raid.Options{Wrap: reads.wrap})
			slot := rng.IntN(g.members)
			spare := filepath.Join(t.TempDir(), "new")
			if err := a.Vol.Replace(slot, spare); err != nil {
				t.Fatal(err)
			}
			reads.take()
			raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			if err := a.Vol.AddSpare(a.Dirs[slot]); !errors.Is(err, blockdev.ErrInUse) {
				t.Fatalf("adding the member being replaced as a spare: %v, want %v", err, blockdev.ErrInUse)
			}
			// A degraded read would have read every other member instead.
			// (No count of the bytes read: hedged reads, under load, read
			// more whatever the source does.)
			counts := reads.take()
			if g.layout == "raid5" || g.layout == "raid6" {
				if counts[a.Dirs[slot]] == 0 {
					t.Fatalf("the old member served no reads: %v", counts)
				}
			}
			// Writes ahead of the rebuild, then behind and ahead of it.
			randomOps(t, rng, a.Vol, m, 100, 64<<10)
			region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
			if _, _, err := a.Vol.RebuildStep(region); err != nil {
				t.Fatal(err)
			}
			randomOps(t, rng, a.Vol, m, 100, 64<<10)
			reads.take()
			rebuildAll(t, a.Vol)
			counts = reads.take()
			delete(counts, a.Dirs[slot])
			if n := total(counts); n != 0 {
				t.Fatalf("the rebuild read %d bytes from members other than the one replaced: %v", n, counts)
			}
			if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
				t.Fatalf("after the rebuild: %+v", st)
			}
			checkRebuilt(t, a, c, m, slot, spare)
		})
	}
}

// TestReplaceOutlivesTheOldMember: the member being replaced fails (its
// reads, or its writes) partway through. It is dropped, the slot's reads
// ahead of the rebuild are reconstructed from the others, the rebuild
// completes, and no read differs from the model.
func TestReplaceOutlivesTheOldMember(t *testing.T) {
	for _, g := range rebuildGeometries {
		for _, op := range []blockdev.Op{blockdev.OpRead, blockdev.OpWrite} {
			t.Run(g.layout+"/"+op.String(), func(t *testing.T) {
				t.Parallel()
				rng := seeded(t)
				c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: rebuildSize}
				a, m := filled(t, c, g.members, raid.Options{})
				slot := rng.IntN(g.members)
				old := a.Fault(slot)
				spare := filepath.Join(t.TempDir(), "new")
				if err := a.Vol.Replace(slot, spare); err != nil {
					t.Fatal(err)
				}
				randomOps(t, rng, a.Vol, m, 50, 64<<10)
				region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
				if _, _, err := a.Vol.RebuildStep(region); err != nil {
					t.Fatal(err)
				}
				if err := old.Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: op}); err != nil {
					t.Fatal(err)
				}
				randomOps(t, rng, a.Vol, m, 100, 64<<10)
				raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
				rebuildAll(t, a.Vol)
				if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
					t.Fatalf("after the rebuild: %+v", st)
				}
				checkRebuilt(t, a, c, m, slot, spare)
			})
		}
	}
}

// TestReplaceResumesAfterCrash: a crash partway through a replace, with
// writes on both sides of its cursor, leaves it to resume from its
// checkpoint at the next mount, the member replaced given back too (it is
// not taken again); no read differs from the model, and once done the
// members agree with the model on disk.
func TestReplaceResumesAfterCrash(t *testing.T) {
	raid.CheckpointEveryStep(t)
	for _, g := range rebuildGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: rebuildSize}
			a, m := filled(t, c, g.members, raid.Options{})
			slot := rng.IntN(g.members)
			spare := filepath.Join(t.TempDir(), "new")
			if err := a.Vol.Replace(slot, spare); err != nil {
				t.Fatal(err)
			}
			region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
			if _, _, err := a.Vol.RebuildStep(region); err != nil {
				t.Fatal(err)
			}
			before := a.Vol.Rebuilds()
			if len(before) != 1 || before[0].Done == 0 {
				t.Fatalf("after a step: rebuilds under way %+v, want one with progress", before)
			}
			// The next step checkpoints what the first did; its own work
			// is done again after the crash.
			if _, _, err := a.Vol.RebuildStep(region); err != nil {
				t.Fatal(err)
			}
			randomOps(t, rng, a.Vol, m, 100, 64<<10)
			a.Vol.Crash()
			a.Vol = nil
			a.Open(t, append(withSlot(a.Dirs, slot, spare), a.Dirs[slot])...)
			after := a.Vol.Rebuilds()
			if len(after) != 1 || after[0].Done != before[0].Done || after[0].Total != before[0].Total {
				t.Fatalf("before the crash %+v, after reopening %+v: want it resumed where it was", before, after)
			}
			raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			randomOps(t, rng, a.Vol, m, 100, 64<<10)
			if rest := rebuildAll(t, a.Vol); rest != after[0].Total-after[0].Done {
				t.Fatalf("after the crash the replace covered %d bytes, want the %d left of %d", rest, after[0].Total-after[0].Done, after[0].Total)
			}
			if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
				t.Fatalf("after the replace: %+v", st)
			}
			checkRebuilt(t, a, c, m, slot, spare)
		})
	}
}
