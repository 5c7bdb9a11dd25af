package raid_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// TestReturningMemberIsResynced leaves a member out of a mount during which
// a few regions are written, then gives it back: it is resynced over those
// regions only (the bytes copied are counted), serves the model's data
// throughout, and the array ends optimal and consistent.
func TestReturningMemberIsResynced(t *testing.T) {
	for _, g := range rebuildGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: g.layout, Chunk: g.chunk, Size: rebuildSize}
			a := raidtest.New(t, c, g.members)
			m := make(raidtest.Model, rebuildSize)
			raidtest.Fill(rng, m)
			if _, err := a.Vol.WriteAt(m, 0); err != nil {
				t.Fatal(err)
			}
			region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
			regions := rebuildSize / region

			away := rng.IntN(g.members)
			var rest []string
			for i, d := range a.Dirs {
				if i != away {
					rest = append(rest, d)
				}
			}
			a.Open(t, rest...)
			// Writes in two regions while it is away.
			touched := rng.Perm(int(regions))[:2]
			for _, r := range touched {
				off, n := int64(r)*region+rng.Int64N(region/2), 1+rng.Int64N(region/2)
				raidtest.Fill(rng, m[off:off+n])
				if _, err := a.Vol.WriteAt(m[off:off+n], off); err != nil {
					t.Fatal(err)
				}
			}
			a.Open(t, a.Dirs...)
			st := a.Vol.Status()
			if st.State != raid.ArrayRebuilding || st.Members[away].State != "REBUILDING" || len(st.Rebuilds) != 1 || st.Rebuilds[0].Kind != raid.KindResync {
				t.Fatalf("member %d back: %+v", away, st)
			}
			raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			if copied := rebuildAll(t, a.Vol); copied != 2*region {
				t.Fatalf("the resync covered %d bytes, want the 2 regions of %d written while the member was away", copied, region)
			}
			if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
				t.Fatalf("after the resync: %+v", st)
			}
			if i := slices.IndexFunc(a.Vol.Events(), func(e raid.Event) bool { return e.Kind == raid.KindResync && e.Slot == away && e.New == "ONLINE" }); i < 0 {
				t.Fatal("no event for the end of the resync")
			}
			raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
			raidtest.CheckConsistent(t, c, a.Dirs)
		})
	}
}

// TestUnreachableMemberIsResyncedWhenItAnswers takes a member's directory
// away on a live volume at failure level 0 (nothing is fenced by itself):
// the member is marked away, writes go on, and once its directory is back
// it is resynced over the regions written meanwhile and comes back online.
func TestUnreachableMemberIsResyncedWhenItAnswers(t *testing.T) {
	rng := seeded(t)
	ev := make(events, 10000)
	pol := raid.DefaultPolicy()
	pol.FailureLevel, pol.HealthTimeout = 0, 150*time.Millisecond
	c := raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: rebuildSize}
	a := raidtest.New(t, c, 4, raid.Options{Policy: pol, OnEvent: ev.on})
	m := make(raidtest.Model, rebuildSize)
	raidtest.Fill(rng, m)
	if _, err := a.Vol.WriteAt(m, 0); err != nil {
		t.Fatal(err)
	}
	// Flushes let the write-intent log clear the regions written: they
	// are not under way when the member goes.
	for range 3 {
		if err := a.Vol.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
	const away = 2
	hidden := a.Dirs[away] + ".away"
	if err := os.Rename(a.Dirs[away], hidden); err != nil {
		t.Fatal(err)
	}
	if e := ev.waitFor(t, "down", away); e.New != "REMOVED" {
		t.Fatalf("down event: %+v", e)
	}
	off, n := 3*region+100, region/3
	raidtest.Fill(rng, m[off:off+n])
	if _, err := a.Vol.WriteAt(m[off:off+n], off); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(hidden, a.Dirs[away]); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "resync", away)
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
	if copied := rebuildAll(t, a.Vol); copied != region {
		t.Fatalf("the resync covered %d bytes, want the region of %d written while the member was away", copied, region)
	}
	if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
		t.Fatalf("after the resync: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
	a.Close(t)
	raidtest.CheckOnDisk(t, c, a.Dirs, m)
}

// TestHalfRebuiltMemberComesBackToARebuild: a spare taking over is partly
// rebuilt when the array is next assembled without it; writes go on, and
// when it comes back its label is intact, but it never held the regions
// its rebuild had not reached. It gets a rebuild from the start, not a
// resync of what it missed, and ends holding everything.
func TestHalfRebuiltMemberComesBackToARebuild(t *testing.T) {
	raid.CheckpointEveryStep(t)
	rng := seeded(t)
	c, spare := withSpare(t, "raid5", 16<<10)
	a, m := filled(t, c, 4, raid.Options{})
	if err := a.Vol.Fail(1); err != nil {
		t.Fatal(err)
	}
	waitWork(t, a.Vol)
	if _, _, err := a.Vol.RebuildStep(0); err != nil {
		t.Fatal(err)
	}
	dirs := withSlot(a.Dirs, 1, spare)
	a.Open(t, dirs[0], dirs[2], dirs[3])
	region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
	off := region + rng.Int64N(region/2)
	raidtest.Fill(rng, m[off:off+4096])
	if _, err := a.Vol.WriteAt(m[off:off+4096], off); err != nil {
		t.Fatal(err)
	}
	a.Open(t, dirs...)
	st := a.Vol.Status()
	if st.Members[1].State != "REBUILDING" || len(st.Rebuilds) != 1 || st.Rebuilds[0].Kind != raid.KindRebuild {
		t.Fatalf("the half-rebuilt member back: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if n := rebuildAll(t, a.Vol); n != c.Size {
		t.Fatalf("the rebuild covered %d bytes, want all %d written", n, c.Size)
	}
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	a.Close(t)
	raidtest.CheckOnDisk(t, c, dirs, m)
	raidtest.CheckConsistent(t, c, dirs)
}
