package raid_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// TestIntentLogUnderWritesAndFlushes: writers marking regions race flushes
// clearing them; every write lands, and a clean close leaves nothing to
// recover.
func TestIntentLogUnderWritesAndFlushes(t *testing.T) {
	// 16 KiB stripes: a region is 256 stripes (4 MiB), so the 12 MiB volume
	// has three, marked and cleared over and over.
	c := raid.Config{Layout: "raid5", Chunk: 8 << 10, Size: 12 << 20}
	ev := make(events, 10000)
	a := raidtest.New(t, c, 3, raid.Options{OnEvent: ev.on})
	model := make(raidtest.Model, c.Size)
	const writers = 6
	var wg sync.WaitGroup
	var stop atomic.Bool
	wg.Go(func() {
		for !stop.Load() {
			if err := a.Vol.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var writes sync.WaitGroup
	for w := range writers {
		writes.Go(func() {
			rng := seeded(t)
			// Writer w owns the 64 KiB pieces equal to w modulo writers.
			for range 300 {
				piece := rng.Int64N(c.Size/(64<<10)/writers)*writers + int64(w)
				off := piece * 64 << 10
				raidtest.Fill(rng, model[off:off+64<<10])
				if _, err := a.Vol.WriteAt(model[off:off+64<<10], off); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writes.Wait()
	stop.Store(true)
	wg.Wait()
	raidtest.Expect(t, a.Vol, model, 0, c.Size)
	a.Close(t)
	raidtest.CheckOnDisk(t, c, a.Dirs, model)
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, model, 0, c.Size)
	for len(ev) > 0 {
		if e := <-ev; e.Kind == "recover" {
			t.Fatalf("a clean close was followed by recovery: %s", e)
		}
	}
}

// TestRecoveryLooksOnlyWhereItMust: after a crash the resync policy checks
// the regions ever written, and the bitmap only those with writes not yet
// flushed (and idle for a flush interval).
func TestRecoveryLooksOnlyWhereItMust(t *testing.T) {
	// 16 KiB stripes: 4 MiB regions, four of them.
	c := raid.Config{Layout: "raid5", Chunk: 8 << 10, Size: 16 << 20}
	for _, g := range []struct {
		policy raid.Consistency
		want   string
	}{
		{raid.ConsistencyResync, "resynced 2 region(s)"},
		{raid.ConsistencyBitmap, "resynced 1 region(s)"},
		{raid.ConsistencyJournal, "replayed 1 journal entries, resynced 1 region(s)"},
	} {
		t.Run(string(g.policy), func(t *testing.T) {
			ev := make(events, 10000)
			a := raidtest.New(t, c, 3, raid.Options{Consistency: g.policy, OnEvent: ev.on})
			model := make(raidtest.Model, c.Size)
			write := func(off, n int64) {
				raidtest.Fill(seeded(t), model[off:off+n])
				if _, err := a.Vol.WriteAt(model[off:off+n], off); err != nil {
					t.Fatal(err)
				}
			}
			write(0, 64<<10) // region 0, then flushed and idle long enough to be cleared
			for range 3 {
				if err := a.Vol.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			write(9<<20+100, 5000) // region 2: a partial stripe, not flushed
			a.Vol.Crash()
			a.Vol = nil
			a.Open(t, a.Dirs...)
			e := ev.waitFor(t, "recover", -1)
			if !strings.Contains(e.Reason, g.want) {
				t.Fatalf("recovery: %q, want %q", e.Reason, g.want)
			}
			raidtest.Expect(t, a.Vol, model, 0, c.Size)
		})
	}
}
