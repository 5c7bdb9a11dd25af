package raid_test

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// events collects a volume's events for a test to wait on.
type events chan raid.Event

func (ch events) on(e raid.Event) { ch <- e }

// waitFor returns the first event of the given kind (and slot, unless -2),
// failing the test if none comes within a generous bound.
func (ch events) waitFor(t *testing.T, kind string, slot int) raid.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Kind == kind && (slot == -2 || e.Slot == slot) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event for slot %d", kind, slot)
		}
	}
}

// seen drains the events that have come, and reports whether one of the
// given kind and slot was among them.
func (ch events) seen(kind string, slot int) bool {
	found := false
	for {
		select {
		case e := <-ch:
			found = found || (e.Kind == kind && e.Slot == slot)
		default:
			return found
		}
	}
}

// filled makes an array, writes random data over all of it, flushes, and
// returns the model.
func filled(t *testing.T, c raid.Config, members int, o raid.Options) (*raidtest.Array, raidtest.Model) {
	t.Helper()
	a := raidtest.New(t, c, members, o)
	m := make(raidtest.Model, c.Size)
	raidtest.Fill(seeded(t), m)
	if _, err := a.Vol.WriteAt(m, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Vol.Flush(); err != nil {
		t.Fatal(err)
	}
	return a, m
}

func TestOperatorFailFencesAndRecords(t *testing.T) {
	ev := make(events, 100)
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 5, raid.Options{OnEvent: ev.on})
	if err := a.Vol.Fail(1); err != nil {
		t.Fatalf("Fail(1): %v", err)
	}
	e := ev.waitFor(t, "fence", 1)
	if e.Old != "ONLINE" || e.New != "FAULTED" || e.Reason != "failed by the operator" {
		t.Fatalf("fence event: %+v", e)
	}
	st := a.Vol.Status()
	if st.State != raid.ArrayDegraded || st.Members[1].State != "FAULTED" || st.Generation != 2 {
		t.Fatalf("status after Fail: %+v", st)
	}
	// Service goes on without it, writes included.
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	p := make([]byte, 100<<10)
	raidtest.Fill(seeded(t), p)
	if _, err := a.Vol.WriteAt(p, 12345); err != nil {
		t.Fatal(err)
	}
	copy(m[12345:], p)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)

	// Reopened from all its directories, the array leaves the fenced
	// member out, fenced: it missed writes, and its generation says so.
	a.Open(t, a.Dirs...)
	st = a.Vol.Status()
	if st.Members[1].State != "FAULTED" || st.Generation != 3 { // the degraded reopen bumps it again
		t.Fatalf("after reopen: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if i := slices.IndexFunc(a.Vol.Events(), func(e raid.Event) bool { return e.Kind == "fence" && e.Slot == 1 }); i < 0 {
		t.Fatalf("the fence event was not kept: %v", a.Vol.Events())
	}
	if _, err := raid.Inspect(a.Dirs); !errors.Is(err, blockdev.ErrInUse) {
		t.Fatalf("offline status of an open array = %v, want ErrInUse", err)
	}
	a.Close(t)
	r, err := raid.Inspect(a.Dirs)
	if err != nil || r.Slots[1].State != raid.StateStale {
		t.Fatalf("offline status: %+v, %v", r, err)
	}
}

func TestDegradedAssemblyIsRecorded(t *testing.T) {
	a := raidtest.New(t, raid.Config{Layout: "raid1", Size: 1 << 20}, 2, raid.Options{NoMonitor: true})
	// Each degraded assembly records an event (and bumps the generation).
	for range 3 {
		a.Open(t, a.Dirs[0])
	}
	evs := a.Vol.Events()
	if len(evs) != 3 || evs[2].Kind != "assemble" || a.Vol.Status().Generation != 4 {
		t.Fatalf("events after three degraded assemblies: %v, generation %d", evs, a.Vol.Status().Generation)
	}
}

func TestFailRefusesWhatWouldLoseData(t *testing.T) {
	a := raidtest.New(t, raid.Config{Layout: "raid1", Size: 1 << 20}, 2)
	if err := a.Vol.Fail(0); err != nil {
		t.Fatal(err)
	}
	if err := a.Vol.Fail(1); !errors.Is(err, raid.ErrQuorum) {
		t.Fatalf("Fail of the last copy = %v, want ErrQuorum", err)
	}
	if st := a.Vol.Status(); st.Members[1].State != "ONLINE" || st.Generation != 2 {
		t.Fatalf("a refused Fail changed the array: %+v", st)
	}
	if err := a.Vol.Fail(7); err == nil {
		t.Fatal("Fail of a slot that does not exist succeeded")
	}
}

func TestOfflineForMaintenance(t *testing.T) {
	ev := make(events, 100)
	c := raid.Config{Layout: "raid10", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 4, raid.Options{OnEvent: ev.on})
	if err := a.Vol.Offline(2); err != nil {
		t.Fatal(err)
	}
	if e := ev.waitFor(t, "offline", 2); e.Old != "ONLINE" || e.New != "OFFLINE" {
		t.Fatalf("offline event: %+v", e)
	}
	// Its mirror partner is now the last copy of its half of the data.
	if err := a.Vol.Offline(3); !errors.Is(err, raid.ErrQuorum) {
		t.Fatalf("Offline of the last copy = %v, want ErrQuorum", err)
	}
	if err := a.Vol.Offline(2); err == nil {
		t.Fatal("Offline of an OFFLINE member succeeded")
	}
	st := a.Vol.Status()
	if st.State != raid.ArrayDegraded || st.Members[2].State != "OFFLINE" || st.Generation != 2 {
		t.Fatalf("status: %+v", st)
	}
	if slices.ContainsFunc(a.Vol.Events(), func(e raid.Event) bool { return e.Kind == "failover" }) {
		t.Fatal("taking a member offline started a failover")
	}
	p := make([]byte, 200<<10)
	raidtest.Fill(seeded(t), p)
	if _, err := a.Vol.WriteAt(p, 300<<10); err != nil {
		t.Fatal(err)
	}
	copy(m[300<<10:], p)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
}

func TestErrorsRestartThenFence(t *testing.T) {
	ev := make(events, 1000)
	pol := raid.DefaultPolicy()
	pol.IOErrors = raid.Threshold{Count: 3, Window: time.Minute}
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 6, raid.Options{OnEvent: ev.on, Policy: pol})
	failAll(a, []int{2})
	// Reads go on being right while the member fails, is restarted (its
	// probe still fails) and is fenced.
	for i := 0; !ev.seen("fence", 2); i++ {
		if i == 2000 {
			t.Fatalf("member 2 not fenced: %v", a.Vol.Events())
		}
		raidtest.Expect(t, a.Vol, m, 0, c.Size)
	}
	kinds := []string{}
	for _, e := range a.Vol.Events() {
		if e.Slot == 2 {
			kinds = append(kinds, e.Kind)
		}
	}
	if len(kinds) < 2 || !slices.Equal(kinds[:2], []string{"restart", "fence"}) || a.Vol.Status().Members[2].State != "FAULTED" {
		t.Fatalf("member 2's events: %v, want restart then fence", kinds)
	}
	if st := a.Vol.Status(); st.Members[2].Counters.ReadErrors < 3 {
		t.Fatalf("read errors counted: %+v", st.Members[2].Counters)
	}
}

func TestQuorumLossSuspendsAndResumes(t *testing.T) {
	ev := make(events, 1000)
	pol := raid.DefaultPolicy()
	pol.HealthTimeout = 300 * time.Millisecond
	c := raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 3, raid.Options{OnEvent: ev.on, Policy: pol})
	away := func(slot int) string { return a.Dirs[slot] + ".away" }

	// One member's directory disappears: it is restarted, cannot be
	// reopened, and is fenced.
	if err := os.Rename(a.Dirs[0], away(0)); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "fence", 0)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)

	// A second one goes: the array cannot serve without it, so it is kept
	// and the volume suspends.
	if err := os.Rename(a.Dirs[1], away(1)); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "suspend", -1)
	if _, err := a.Vol.ReadAt(make([]byte, 4096), 0); !errors.Is(err, raid.ErrSuspended) {
		t.Fatalf("read while suspended = %v, want ErrSuspended", err)
	}
	if _, err := a.Vol.WriteAt(make([]byte, 4096), 0); !errors.Is(err, raid.ErrSuspended) {
		t.Fatalf("write while suspended = %v, want ErrSuspended", err)
	}
	if st := a.Vol.Status(); st.State != raid.ArraySuspended || st.Members[1].State != "REMOVED" {
		t.Fatalf("status while suspended: %+v", st)
	}

	// It comes back: the volume resumes by itself and nothing flushed is
	// lost.
	if err := os.Rename(away(1), a.Dirs[1]); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "resume", -1)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if err := os.Rename(away(0), a.Dirs[0]); err != nil {
		t.Fatal(err)
	}
}

func TestCountersSurviveReopen(t *testing.T) {
	c := raid.Config{Layout: "mirror:3", Chunk: 16 << 10, Size: 1 << 20}
	a, m := filled(t, c, 3, raid.Options{})
	a.Close(t)
	// Rot two blocks on member 0, which serves the first MiB's reads.
	for _, off := range []int64{0, 8192} {
		rot(t, a.Dirs[0], off, seeded(t))
	}
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	got := a.Vol.Status().Members[0].Counters.ChecksumErrors
	if got != 2 {
		t.Fatalf("checksum errors on member 0 = %d, want 2", got)
	}
	a.Open(t, a.Dirs...)
	if after := a.Vol.Status().Members[0].Counters.ChecksumErrors; after != got {
		t.Fatalf("checksum errors after reopen = %d, want %d", after, got)
	}
}

// TestFailedWritesAreResyncedAfterARestart fails a burst of a member's
// writes, as many as the error threshold: the writes succeed on the others,
// the member is restarted, and since its restart succeeds it stays in, but
// is first resynced over the regions it missed, so that its copies agree
// with the model on disk again, without waiting for a scrub.
func TestFailedWritesAreResyncedAfterARestart(t *testing.T) {
	for layout, members := range map[string]int{"raid1": 2, "raid5": 3} {
		t.Run(layout, func(t *testing.T) {
			t.Parallel()
			ev := make(events, 10000)
			pol := raid.DefaultPolicy()
			pol.IOErrors = raid.Threshold{Count: 3, Window: time.Minute}
			c := raid.Config{Layout: layout, Chunk: 16 << 10, Size: 8 << 20}
			a, m := filled(t, c, members, raid.Options{OnEvent: ev.on, Policy: pol})
			a.Fault(1).Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpWrite, Count: 3})
			rng := seeded(t)
			for _, off := range []int64{0, 3 << 20, 6 << 20} {
				p := m[off : off+64<<10]
				raidtest.Fill(rng, p)
				if _, err := a.Vol.WriteAt(p, off); err != nil {
					t.Fatalf("write at %d: %v", off, err)
				}
			}
			ev.waitFor(t, "restart", 1)
			if e := ev.waitFor(t, "resync", 1); e.Old != "ONLINE" || e.New != "REBUILDING" {
				t.Fatalf("resync event %+v, want ONLINE -> REBUILDING", e)
			}
			raidtest.Expect(t, a.Vol, m, 0, c.Size)
			if n := rebuildAll(t, a.Vol); n == 0 {
				t.Fatal("the resync covered nothing")
			}
			if st := a.Vol.Status(); st.State != raid.ArrayOptimal || st.Members[1].State != "ONLINE" {
				t.Fatalf("after the resync: array %s, member 1 %s", st.State, st.Members[1].State)
			}
			if ev.seen("fence", 1) {
				t.Fatal("member 1 was fenced; its restart should have kept it")
			}
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
		})
	}
}

// TestResyncBesideAFencedMember: one member of a three-way mirror vanishes
// and is fenced; another vanishes soon after, is kept as the likely victim
// of a shared fault, and comes back. It is resynced from the one that
// stayed, without consulting the fenced member's closed metadata.
func TestResyncBesideAFencedMember(t *testing.T) {
	ev := make(events, 10000)
	pol := raid.DefaultPolicy()
	pol.HealthTimeout = 300 * time.Millisecond
	pol.FailureLevel = 1
	c := raid.Config{Layout: "mirror:3", Chunk: 16 << 10, Size: 4 << 20}
	a, m := filled(t, c, 3, raid.Options{OnEvent: ev.on, Policy: pol})
	a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultVanish})
	ev.waitFor(t, "fence", 0)
	a.Fault(2).Add(blockdev.Rule{Kind: blockdev.FaultVanish})
	if e := ev.waitFor(t, "down", 2); e.New != "REMOVED" {
		t.Fatalf("member 2 went %+v, want down to REMOVED (kept: the failures look shared)", e)
	}
	if st := a.Vol.Status(); st.Members[2].State != "REMOVED" || st.State != raid.ArrayDegraded {
		t.Fatalf("status with member 2 away: %s, member 2 %s", st.State, st.Members[2].State)
	}
	p := m[64<<10 : 128<<10]
	raidtest.Fill(seeded(t), p)
	if _, err := a.Vol.WriteAt(p, 64<<10); err != nil {
		t.Fatal(err)
	}
	a.Fault(2).Clear()
	ev.waitFor(t, "resync", 2)
	waitWork(t, a.Vol)
	if n := rebuildAll(t, a.Vol); n == 0 {
		t.Fatal("the resync covered nothing")
	}
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if st := a.Vol.Status(); st.Members[2].State != "ONLINE" || st.Members[0].State != "FAULTED" {
		t.Fatalf("after the resync: members %+v", st.Members)
	}
}
