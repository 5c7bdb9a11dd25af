package raid_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// allocated returns the bytes of disk space a member's data file takes.
func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestDiscardReadsAsZerosAndFreesSpace(t *testing.T) {
	forEachGeometry(t, func(t *testing.T, c raid.Config, members int) {
		rng := seeded(t)
		a := raidtest.New(t, c, members)
		model := make(raidtest.Model, c.Size)
		raidtest.Fill(rng, model)
		if _, err := a.Vol.WriteAt(model, 0); err != nil {
			t.Fatal(err)
		}
		if err := a.Vol.Flush(); err != nil {
			t.Fatal(err)
		}
		before := allocated(t, a.Dirs[0])
		// Ragged ranges, whole stripes, and the end of the volume.
		ranges := [][2]int64{{0, 1}, {bs - 3, 10 * bs}, {c.Size / 4, c.Size / 2}, {c.Size - 5000, 5000}}
		for range 20 {
			off, n := raidtest.RandomRange(rng, c.Size, c.Size/8)
			ranges = append(ranges, [2]int64{off, n})
		}
		for i, r := range ranges {
			if err := a.Vol.Discard(r[0], r[1]); err != nil {
				t.Fatalf("Discard(%d, %d): %v", r[0], r[1], err)
			}
			clear(model[r[0] : r[0]+r[1]])
			if i%5 == 0 {
				off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
				raidtest.Fill(rng, model[off:off+n])
				if _, err := a.Vol.WriteAt(model[off:off+n], off); err != nil {
					t.Fatal(err)
				}
			}
		}
		raidtest.Expect(t, a.Vol, model, 0, c.Size)
		if err := a.Vol.Flush(); err != nil {
			t.Fatal(err)
		}
		if after := allocated(t, a.Dirs[0]); after >= before {
			t.Errorf("member 0 takes %d bytes after discarding half the volume, %d before: nothing was freed", after, before)
		}
		a.Close(t)
		raidtest.CheckOnDisk(t, c, a.Dirs, model)
		a.Open(t, a.Dirs...)
		raidtest.Expect(t, a.Vol, model, 0, c.Size)
	})
}

func TestDiscardRefusesBadRanges(t *testing.T) {
	c := raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}
	a := raidtest.New(t, c, 3)
	model := make(raidtest.Model, c.Size)
	raidtest.Fill(seeded(t), model)
	if _, err := a.Vol.WriteAt(model, 0); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{-1, 10}, {0, c.Size + 1}, {c.Size, 1}, {10, -5}} {
		if err := a.Vol.Discard(r[0], r[1]); !errors.Is(err, raid.ErrOutOfRange) {
			t.Errorf("Discard(%d, %d) = %v, want ErrOutOfRange", r[0], r[1], err)
		}
	}
	raidtest.Expect(t, a.Vol, model, 0, c.Size)
}

// A member that fails its discard keeps its old data, but its checksums
// say zeros: its stale blocks are caught and the zeros served from the
// others, and repaired.
func TestDiscardWithAFailingMember(t *testing.T) {
	for _, layout := range []struct {
		name    string
		members int
	}{{"raid1", 2}, {"raid6", 6}} {
		t.Run(layout.name, func(t *testing.T) {
			c := raid.Config{Layout: layout.name, Chunk: 16 << 10, Size: 2 << 20}
			a := raidtest.New(t, c, layout.members)
			model := make(raidtest.Model, c.Size)
			raidtest.Fill(seeded(t), model)
			if _, err := a.Vol.WriteAt(model, 0); err != nil {
				t.Fatal(err)
			}
			a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpWrite, Count: 1})
			if err := a.Vol.Discard(0, c.Size/2); err != nil {
				t.Fatalf("Discard with one member failing: %v", err)
			}
			clear(model[:c.Size/2])
			raidtest.Expect(t, a.Vol, model, 0, c.Size)
			if got := a.Vol.Status().Members[1].Counters.WriteErrors; got != 1 {
				t.Errorf("member 1 counts %d write errors, want 1", got)
			}
		})
	}
}
