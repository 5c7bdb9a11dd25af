package raid_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

func slowPolicy(level int) raid.PolicyConfig {
	p := raid.DefaultPolicy()
	p.FailureLevel = level
	p.SlowFloor = 20 * time.Millisecond
	// A loaded test machine slows the peers too: keep the bound well under
	// the injected delay, so that the member stays an outlier.
	p.SlowFactor = 2
	p.SlowIOs = raid.Threshold{Count: 5, Window: time.Minute}
	p.Restarts.Count = 1
	return p
}

// TestSlowMemberIsHedgedThenSitsOut: a member that takes 500 ms per read is
// hedged around, then sits out of reads; its writes go on; every read is
// right throughout. (In raid5 over five members, the write's last stripe
// has its parity on the member sitting out and is written by folding the
// change into the old parity, which cannot be read: it is encoded afresh.)
func TestSlowMemberIsHedgedThenSitsOut(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
	}{{"raid1", 2}, {"raid5", 5}, {"raid6", 5}} {
		t.Run(g.layout, func(t *testing.T) {
			ev := make(events, 10000)
			c := raid.Config{Layout: g.layout, Chunk: 16 << 10, Size: 1 << 20}
			a, m := filled(t, c, g.members, raid.Options{Policy: slowPolicy(3), OnEvent: ev.on})
			a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 500 * time.Millisecond})
			rng := seeded(t)
			sat := false
			for i := 0; !sat; i++ {
				if i == 400 {
					t.Fatalf("member 0 never sat out: %+v", a.Vol.Status().Members[0])
				}
				off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
				raidtest.Expect(t, a.Vol, m, off, n)
				sat = a.Vol.Status().Members[0].SitOut
			}
			ev.waitFor(t, "sit-out", 0)
			st := a.Vol.Status().Members[0]
			if st.State != "ONLINE" || st.Counters.SlowIOs < 5 || st.Counters.Repairs != 0 {
				t.Fatalf("slow member: %+v (want ONLINE, counted slow, never repaired)", st)
			}
			// Its writes go on while it sits out.
			p := make([]byte, 64<<10)
			raidtest.Fill(rng, p)
			if _, err := a.Vol.WriteAt(p, 4096); err != nil {
				t.Fatal(err)
			}
			copy(m[4096:], p)
			raidtest.Expect(t, a.Vol, m, 0, c.Size)
			a.Fault(0).Clear()
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
		})
	}
}

// TestSlowMemberFailsAtLevel5: at failure level 5 a persistently slow member
// is restarted, then fenced.
func TestSlowMemberFailsAtLevel5(t *testing.T) {
	ev := make(events, 10000)
	c := raid.Config{Layout: "mirror:3", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 3, raid.Options{Policy: slowPolicy(5), OnEvent: ev.on})
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 500 * time.Millisecond})
	rng := seeded(t)
	// readUntil reads random ranges, each checked against the model, until
	// done says so.
	readUntil := func(what string, done func() bool) {
		for i := 0; !done(); i++ {
			if i == 2000 {
				t.Fatalf("%s never happened: %v", what, a.Vol.Events())
			}
			off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
			raidtest.Expect(t, a.Vol, m, off, n)
		}
	}
	readUntil("a restart", func() bool {
		return slices.ContainsFunc(a.Vol.Events(), func(e raid.Event) bool { return e.Kind == "restart" })
	})
	// The restart reopens and probes the member (slowly): wait for it.
	if e := ev.waitFor(t, "note", 0); e.Reason != "restart succeeded" {
		t.Fatalf("after the restart: %+v", e)
	}
	readUntil("the fence", func() bool { return a.Vol.Status().Members[0].State == "FAULTED" })
	ev.waitFor(t, "fence", 0)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
}

// TestSlowMemberWithoutRedundancy: when no other member can serve its data
// (raid0, or a mirror whose other copy is fenced), a slow member is waited
// for: its reads are slow but never fail, and it does not sit out.
func TestSlowMemberWithoutRedundancy(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
		fence   int // a member to fence first, or -1
	}{{"raid0", 3, -1}, {"raid1", 2, 1}} {
		t.Run(g.layout, func(t *testing.T) {
			c := raid.Config{Layout: g.layout, Chunk: 16 << 10, Size: 1 << 20}
			a, m := filled(t, c, g.members, raid.Options{Policy: slowPolicy(3)})
			if g.fence >= 0 {
				if err := a.Vol.Fail(g.fence); err != nil {
					t.Fatal(err)
				}
			}
			a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 100 * time.Millisecond})
			rng := seeded(t)
			for range 20 {
				off, n := raidtest.RandomRange(rng, c.Size, 64<<10)
				raidtest.Expect(t, a.Vol, m, off, n)
			}
			st := a.Vol.Status().Members[0]
			if st.SitOut || st.Counters.SlowIOs == 0 {
				t.Fatalf("the member the data needs: %+v (want counted slow, not sitting out)", st)
			}
		})
	}
}

// TestWholeDiskStallIsNotHedgedAway: when every member stalls now and then
// (a shared disk under load), each of them is slow lately, and hedging them
// all would leave reads with nothing to fall back on. Every read must still
// be served, right.
func TestWholeDiskStallIsNotHedgedAway(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
	}{{"raid5", 3}, {"mirror:3", 3}} {
		t.Run(g.layout, func(t *testing.T) {
			c := raid.Config{Layout: g.layout, Chunk: 16 << 10, Size: 1 << 20}
			p := slowPolicy(3)
			p.SlowIOs.Count = 1 << 20 // never sit out: keep every member hedgeable
			a, m := filled(t, c, g.members, raid.Options{Policy: p})
			for slot := range g.members {
				a.Fault(slot).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Prob: 0.4, Delay: 60 * time.Millisecond})
			}
			rng := seeded(t)
			for range 150 {
				off := rng.Int64N(c.Size/bs) * bs
				raidtest.Expect(t, a.Vol, m, off, bs)
			}
		})
	}
}

// TestSlowMemberIsWaitedForWhenTheOthersFail: a slow member is hedged
// around, but when another member then fails, the reads its data is needed
// for wait for it rather than fail.
func TestSlowMemberIsWaitedForWhenTheOthersFail(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
	}{{"raid5", 3}, {"raid1", 2}} {
		t.Run(g.layout, func(t *testing.T) {
			c := raid.Config{Layout: g.layout, Chunk: 16 << 10, Size: 1 << 20}
			p := slowPolicy(0) // nothing is fenced: the failing member stays
			p.SlowIOs.Count = 1 << 20
			a, m := filled(t, c, g.members, raid.Options{Policy: p})
			a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 100 * time.Millisecond})
			rng := seeded(t)
			for a.Vol.Status().Members[0].Counters.SlowIOs == 0 {
				off := rng.Int64N(c.Size/bs) * bs
				raidtest.Expect(t, a.Vol, m, off, bs)
			}
			a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead})
			raidtest.Expect(t, a.Vol, m, 0, c.Size)
		})
	}
}

// TestSlowReadsDuringRestartsDoNotDeadlock runs reads that a delay makes
// slow on a member that errors make the policy restart again and again,
// while events are recorded: a slow read noted to the policy while the
// member's lock is held would close a cycle with a restart waiting for that
// lock and an event being written under the policy's.
func TestSlowReadsDuringRestartsDoNotDeadlock(t *testing.T) {
	pol := raid.DefaultPolicy()
	pol.SlowFloor = time.Millisecond
	pol.SlowFactor = 1
	pol.IOErrors = raid.Threshold{Count: 1, Window: time.Minute}
	pol.Restarts = raid.Threshold{Count: 100000, Window: time.Minute}
	pol.SlowIOs = raid.Threshold{Count: 100000, Window: time.Minute} // never sits out of reads
	c := raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 3, raid.Options{Policy: pol, NoMonitor: true})
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 2 * time.Millisecond})
	// Errors spare block 0, which a restart probes: every restart succeeds.
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead, Start: 1, Prob: 0.2})
	done, reading := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var wg, readers sync.WaitGroup
		for w := range 3 {
			readers.Go(func() {
				buf := make([]byte, 4096)
				for i := range 300 {
					off := int64((i*7+w*13)%256) * 4096
					if _, err := a.Vol.ReadAt(buf, off); err == nil && !bytes.Equal(buf, m[off:off+4096]) {
						t.Errorf("read at %d differs from the model", off)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-reading:
					return
				default:
				}
				a.Vol.Note(-1, "test", fmt.Sprintf("event %d", i))
			}
		})
		readers.Wait()
		close(reading)
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		buf := make([]byte, 1<<20)
		t.Fatalf("reads, restarts and events deadlocked:\n%s", buf[:runtime.Stack(buf, true)])
	}
}

// TestBackgroundReadsAreNotCountedSlow: a scrub's and a rebuild's reads of
// a member slower than its peers are not held against it (they are large
// and queue behind each other, so their latency says nothing of its
// health), while a foreground read of it is.
func TestBackgroundReadsAreNotCountedSlow(t *testing.T) {
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 5, raid.Options{Policy: slowPolicy(3)})
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 100 * time.Millisecond})
	if res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true); err != nil {
		t.Fatal(err)
	} else if res.Bad[0] != 0 {
		t.Fatalf("scrub: %+v", res)
	}
	if err := a.Vol.Fail(1); err != nil {
		t.Fatal(err)
	}
	if err := a.Vol.Replace(1, filepath.Join(t.TempDir(), "new")); err != nil {
		t.Fatal(err)
	}
	for len(a.Vol.Rebuilds()) > 0 {
		if _, _, err := a.Vol.RebuildStep(0); err != nil {
			t.Fatal(err)
		}
	}
	fired := func() int {
		n := 0
		for _, f := range a.Fault(0).Active() {
			n += f.Fired
		}
		return n
	}
	if st := a.Vol.Status().Members[0]; st.Counters.SlowIOs != 0 || st.SitOut || fired() < 2 {
		t.Fatalf("member 0 after a scrub and a rebuild: %+v, %d slow reads (want at least 2, none counted slow)", st, fired())
	}
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if st := a.Vol.Status().Members[0]; st.Counters.SlowIOs == 0 {
		t.Fatalf("member 0 after foreground reads: %+v (want counted slow)", st)
	}
	a.Fault(0).Clear()
}
