package raid_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// rebuildGeometries are the layouts rebuilds are checked on.
var rebuildGeometries = []geometry{
	{"raid1", 2, 64 << 10},
	{"mirror:3", 3, 16 << 10},
	{"raid10", 4, 16 << 10},
	{"raid5", 4, 16 << 10},
	{"raid6", 6, 8 << 10},
}

// rebuildSize spans several write-intent regions, so that a rebuild takes
// several steps.
const rebuildSize = 20 << 20

// workload runs writers over disjoint ranges of the volume, each checking
// every read against its part of the model, until stop is closed. It
// returns a function that waits for the workers and reports how many reads
// they checked.
func workload(t *testing.T, v *raid.Volume, m raidtest.Model, workers int, seed uint64, stop <-chan struct{}) func() int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	reads := 0
	part := int64(len(m)) / int64(workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			lo := int64(w) * part
			mine := m[lo : lo+part]
			buf := make([]byte, 192<<10)
			n := 0
			for {
				select {
				case <-stop:
					mu.Lock()
					reads += n
					mu.Unlock()
					return
				default:
				}
				off, size := raidtest.RandomRange(rng, part, int64(len(buf)))
				p := buf[:size]
				if rng.IntN(2) == 0 {
					raidtest.Fill(rng, p)
					if _, err := v.WriteAt(p, lo+off); err != nil {
						t.Errorf("write of %d bytes at %d: %v", size, lo+off, err)
						return
					}
					copy(mine[off:], p)
					continue
				}
				if _, err := v.ReadAt(p, lo+off); err != nil {
					t.Errorf("read of %d bytes at %d: %v", size, lo+off, err)
					return
				}
				if !bytes.Equal(p, mine[off:off+size]) {
					t.Errorf("read of %d bytes at %d differs from the model", size, lo+off)
					return
				}
				n++
			}
		})
	}
	return func() int { wg.Wait(); return reads }
}

// waitWork waits until the volume has a rebuild to run.
func waitWork(t *testing.T, v *raid.Volume) {
	t.Helper()
	select {
	case <-v.Work():
	case <-time.After(20 * time.Second):
		t.Fatal("no rebuild was started")
	}
}

// rebuildAll runs rebuild steps until none remains and returns the volume
// bytes they covered.
func rebuildAll(t *testing.T, v *raid.Volume) int64 {
	t.Helper()
	var total int64
	for {
		n, more, err := v.RebuildStep(0)
		if err != nil {
			t.Fatalf("rebuild step: %v", err)
		}
		total += n
		if !more {
			return total
		}
	}
}

// withSpare returns the config of a rebuildSize array with a hot spare,
// and the spare's directory.
func withSpare(t *testing.T, layout string, chunk int64) (raid.Config, string) {
	spare := filepath.Join(t.TempDir(), "spare")
	return raid.Config{Layout: layout, Chunk: chunk, Size: rebuildSize, Spares: []string{spare}}, spare
}

// withSlot returns dirs with slot's replaced by dir.
func withSlot(dirs []string, slot int, dir string) []string {
	out := slices.Clone(dirs)
	out[slot] = dir
	return out
}

// TestFailoverRebuildsOntoSpareUnderLoad fences a member of an array with a
// hot spare while writers and checking readers run: the spare takes over
// and is rebuilt, no read differs from the model at any moment, and
// afterwards the array is optimal, a check scrub finds nothing, and the
// members agree with the model on disk.
func TestFailoverRebuildsOntoSpareUnderLoad(t *testing.T) {
	for _, g := range rebuildGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c, spare := withSpare(t, g.layout, g.chunk)
			a := raidtest.New(t, c, g.members)
			if got := a.Vol.Spares(); !slices.Equal(got, []string{spare}) {
				t.Fatalf("spares = %v, want %v", got, []string{spare})
			}
			m := make(raidtest.Model, rebuildSize)
			raidtest.Fill(rng, m[:rebuildSize/2]) // half written before; the writers add more
			if _, err := a.Vol.WriteAt(m[:rebuildSize/2], 0); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			wait := workload(t, a.Vol, m, 3, rng.Uint64(), stop)
			slot := rng.IntN(g.members)
			if err := a.Vol.Fail(slot); err != nil {
				close(stop)
				wait()
				t.Fatal(err)
			}
			waitWork(t, a.Vol)
			if st := a.Vol.Status(); st.State != raid.ArrayRebuilding || st.Members[slot].State != "REBUILDING" || st.Members[slot].Dir != spare {
				t.Errorf("status during the rebuild: %s, member %d %s in %s", st.State, slot, st.Members[slot].State, st.Members[slot].Dir)
			}
			rebuilt := rebuildAll(t, a.Vol)
			close(stop)
			reads := wait()
			if t.Failed() {
				return
			}
			t.Logf("rebuilt %d bytes while %d reads were checked", rebuilt, reads)
			st := a.Vol.Status()
			if st.State != raid.ArrayOptimal || st.Members[slot].State != "ONLINE" || len(st.Spares) != 0 || len(st.Rebuilds) != 0 {
				t.Fatalf("after the rebuild: %+v", st)
			}
			checkRebuilt(t, a, c, m, slot, spare)
		})
	}
}

// checkRebuilt checks an array whose slot was rebuilt onto the member in
// dir: it reads as the model, a check scrub finds nothing, the members
// agree with the model on disk, and the member it replaced, given back
// with the others, is left out for good.
func checkRebuilt(t *testing.T, a *raidtest.Array, c raid.Config, m raidtest.Model, slot int, dir string) {
	t.Helper()
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
	if res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true); err != nil || sum(res.Bad) != 0 || len(res.Lost) != 0 {
		t.Fatalf("check scrub after the rebuild: bad %v lost %v, %v", res.Bad, res.Lost, err)
	}
	a.Close(t)
	dirs := withSlot(a.Dirs, slot, dir)
	raidtest.CheckOnDisk(t, c, dirs, m)
	raidtest.CheckConsistent(t, c, dirs)
	a.Open(t, append(dirs, a.Dirs[slot])...)
	if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
		t.Fatalf("reopened with the replaced member given back too: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
}

// TestRebuildResumesAfterCrash crashes the volume several times in the
// middle of a rebuild: each time it reopens still rebuilding, resumes from
// the checkpoint (not from zero; the last step's own work is done again),
// serves the model's data meanwhile, and in the end completes with
// consistent members.
func TestRebuildResumesAfterCrash(t *testing.T) {
	raid.CheckpointEveryStep(t)
	for _, g := range rebuildGeometries {
		t.Run(g.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c, spare := withSpare(t, g.layout, g.chunk)
			a, m := filled(t, c, g.members, raid.Options{})
			slot := rng.IntN(g.members)
			if err := a.Vol.Fail(slot); err != nil {
				t.Fatal(err)
			}
			waitWork(t, a.Vol)
			dirs := withSlot(a.Dirs, slot, spare)
			var total int64
			region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
			for crash := range 3 {
				// A region, or a third of one: the crash may come with
				// the cursor in the middle of a region. A step
				// checkpoints what the steps before it did, so the
				// second one stores where the first left off.
				budget := []int64{0, region / 3}[rng.IntN(2)]
				if _, _, err := a.Vol.RebuildStep(budget); err != nil {
					t.Fatal(err)
				}
				before := a.Vol.Rebuilds()
				if len(before) != 1 {
					t.Fatalf("crash %d: rebuilds under way: %+v", crash, before)
				}
				if _, _, err := a.Vol.RebuildStep(budget); err != nil {
					t.Fatal(err)
				}
				if now := a.Vol.Rebuilds(); len(now) != 1 || now[0].Done <= before[0].Done {
					t.Fatalf("crash %d: the second step made no progress: %+v, then %+v", crash, before, now)
				}
				a.Vol.Crash()
				a.Vol = nil
				a.Open(t, dirs...)
				after := a.Vol.Rebuilds()
				if len(after) != 1 || after[0].Done != before[0].Done || after[0].Total != before[0].Total || after[0].Done == 0 {
					t.Fatalf("crash %d: before %+v, after reopening %+v: want it resumed where it was", crash, before, after)
				}
				total = after[0].Total
				raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			}
			done := a.Vol.Rebuilds()[0].Done
			if rest := rebuildAll(t, a.Vol); rest != total-done {
				t.Fatalf("after the last crash the rebuild covered %d bytes, want the %d left of %d", rest, total-done, total)
			}
			if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
				t.Fatalf("after the rebuild: %+v", st)
			}
			raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
			a.Close(t)
			raidtest.CheckOnDisk(t, c, dirs, m)
			raidtest.CheckConsistent(t, c, dirs)
		})
	}
}

// TestSparseRebuildIsProportional writes a tenth of a volume, and punches
// out a region of it again: the rebuild covers only the regions that hold
// data, and the result reads right.
func TestSparseRebuildIsProportional(t *testing.T) {
	rng := seeded(t)
	spare := filepath.Join(t.TempDir(), "spare")
	const size = 80 << 20
	c := raid.Config{Layout: "raid5", Chunk: 64 << 10, Size: size, Spares: []string{spare}}
	a := raidtest.New(t, c, 4)
	region := a.Vol.RegionStripes() * a.Vol.StripeBytes()
	m := make(raidtest.Model, size)
	// Three regions' worth of data, in scattered pieces within four
	// regions; then the fourth is discarded whole.
	picks := rng.Perm(int(size / region))[:4]
	for _, r := range picks {
		off := int64(r) * region
		raidtest.Fill(rng, m[off:off+region*3/4])
		if _, err := a.Vol.WriteAt(m[off:off+region*3/4], off); err != nil {
			t.Fatal(err)
		}
	}
	gone := int64(picks[3]) * region
	if err := a.Vol.Discard(gone, region); err != nil {
		t.Fatal(err)
	}
	clear(m[gone : gone+region])
	if got := len(a.Vol.WrittenRegions()); got != 3 {
		t.Fatalf("written regions after the discard: %d, want 3", got)
	}
	if err := a.Vol.Fail(1); err != nil {
		t.Fatal(err)
	}
	waitWork(t, a.Vol)
	rebuilt := rebuildAll(t, a.Vol)
	if rebuilt != 3*region {
		t.Fatalf("rebuilt %d bytes of a %d-byte volume, want the 3 regions of %d that hold data", rebuilt, int64(size), region)
	}
	t.Logf("rebuilt %d of %d bytes (%.1f%%)", rebuilt, int64(size), 100*float64(rebuilt)/size)
	raidtest.Expect(t, a.Vol, m, 0, size)
	if res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true); err != nil || sum(res.Bad) != 0 {
		t.Fatalf("check scrub: bad %v, %v", res.Bad, err)
	}
}

// TestRebuildRecordsLostData rots a block, then fences another member whose
// chunk in that stripe needs it to be rebuilt: the rebuild goes on past the
// stripe, records the member's block there as lost (reads of it fail, with
// an event), rebuilds everything else, and a write over the stripe clears
// the record.
func TestRebuildRecordsLostData(t *testing.T) {
	rng := seeded(t)
	ev := make(events, 10000)
	c, _ := withSpare(t, "raid5", 16<<10)
	a, m := filled(t, c, 4, raid.Options{OnEvent: ev.on})
	l := a.Vol.Layout()
	a.Close(t)
	sd := int64(l.Data) * c.Chunk
	s, b := rng.Int64N(rebuildSize/sd), rng.Int64N(c.Chunk/bs)
	rotten, victim := 0, 1 // data chunks of stripe s
	rot(t, a.Dirs[l.Slot(s, rotten)], s*c.Chunk+b*bs, rng)
	a.Open(t, a.Dirs...)
	if err := a.Vol.Fail(l.Slot(s, victim)); err != nil {
		t.Fatal(err)
	}
	rebuildAll(t, a.Vol)
	lostAt := s*sd + int64(victim)*c.Chunk + b*bs
	want := []raid.Extent{{Off: lostAt, Len: bs}}
	if got := a.Vol.Lost(); !slices.Equal(got, want) {
		t.Fatalf("lost after the rebuild: %v, want %v", got, want)
	}
	if e := ev.waitFor(t, "lost", -1); !strings.Contains(e.Reason, "rebuild of member") {
		t.Fatalf("lost event: %+v", e)
	}
	if st := a.Vol.Status(); st.State != raid.ArrayOptimal || len(st.Lost) != 1 {
		t.Fatalf("after the rebuild: %+v", st)
	}
	for _, off := range []int64{lostAt, s*sd + int64(rotten)*c.Chunk + b*bs} {
		if _, err := a.Vol.ReadAt(make([]byte, bs), off); !errors.Is(err, raid.ErrUnrecoverable) {
			t.Fatalf("read at %d, beyond redundancy = %v, want ErrUnrecoverable", off, err)
		}
	}
	raidtest.Expect(t, a.Vol, m, 0, s*sd)
	raidtest.Expect(t, a.Vol, m, (s+1)*sd, rebuildSize-(s+1)*sd)
	// Writing the stripe anew clears the record and the damage.
	raidtest.Fill(rng, m[s*sd:(s+1)*sd])
	if _, err := a.Vol.WriteAt(m[s*sd:(s+1)*sd], s*sd); err != nil {
		t.Fatal(err)
	}
	if got := a.Vol.Lost(); len(got) != 0 {
		t.Fatalf("lost after the write: %v", got)
	}
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
	if res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true); err != nil || sum(res.Bad) != 0 {
		t.Fatalf("check scrub: bad %v, %v", res.Bad, err)
	}
}

// TestFailoverAwaitsApproval fences a member with auto-failover off: the
// spare waits until the operator approves, then takes over and is rebuilt.
func TestFailoverAwaitsApproval(t *testing.T) {
	pol := raid.DefaultPolicy()
	pol.AutoFailover = false
	c, spare := withSpare(t, "raid6", 16<<10)
	a, m := filled(t, c, 6, raid.Options{Policy: pol})
	if err := a.Vol.Fail(4); err != nil {
		t.Fatal(err)
	}
	if st := a.Vol.Status(); st.Members[4].State != "FAULTED" || !slices.Equal(st.Spares, []string{spare}) || len(st.Rebuilds) != 0 {
		t.Fatalf("before approval: %+v", st)
	}
	if err := a.Vol.Approve(4); err != nil {
		t.Fatal(err)
	}
	if st := a.Vol.Status(); st.Members[4].State != "REBUILDING" || st.Members[4].Dir != spare || len(st.Spares) != 0 {
		t.Fatalf("after approval: %+v", st)
	}
	rebuildAll(t, a.Vol)
	if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
		t.Fatalf("after the rebuild: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
}

// TestJobRecordsFollowTheRebuild keeps a background job's record, rebuilds
// a member, and opens the array from the rebuilt member alone: the record
// is there.
func TestJobRecordsFollowTheRebuild(t *testing.T) {
	c, spare := withSpare(t, "raid1", 64<<10)
	a, m := filled(t, c, 2, raid.Options{})
	if err := a.Vol.SaveJobRecords(map[string][]byte{"scrub": []byte("kept")}, true); err != nil {
		t.Fatal(err)
	}
	if err := a.Vol.Fail(0); err != nil {
		t.Fatal(err)
	}
	rebuildAll(t, a.Vol)
	a.Close(t)
	a.Open(t, spare) // degraded: the rebuilt member alone
	var got []string
	if err := a.Vol.ScanJobRecords("scrub", func(name string, val []byte) error {
		got = append(got, name+"="+string(val))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"scrub=kept"}) {
		t.Fatalf("job records on the rebuilt member: %v", got)
	}
	raidtest.Expect(t, a.Vol, m, 0, rebuildSize)
}

// TestTornWritePastTheCheckpoint: a rebuild has passed a stripe since its
// last checkpoint when a whole-stripe write to it is cut short by a crash:
// its data chunks land, its parity does not. The crash puts the cursor back
// to the checkpoint, so recovery cannot count on the new member's chunk of
// the stripe: the write must have been journaled, so that replaying it
// makes the stripe whole. Every byte reads as written, before and after the
// rebuild completes, and the members agree on disk.
func TestTornWritePastTheCheckpoint(t *testing.T) {
	raid.CheckpointNever(t)
	c, spare := withSpare(t, "raid6", 16<<10)
	a, m := filled(t, c, 6, raid.Options{Consistency: raid.ConsistencyJournal})
	if err := a.Vol.Fail(0); err != nil {
		t.Fatal(err)
	}
	waitWork(t, a.Vol)
	stripe := a.Vol.StripeBytes()
	if _, _, err := a.Vol.RebuildStep(8 * stripe); err != nil {
		t.Fatal(err)
	}
	l, err := raid.ParseLayout(c.Layout, 6)
	if err != nil {
		t.Fatal(err)
	}
	// Stripe 4: behind the cursor, past the checkpoint; the new member in
	// slot 0 holds one of its data chunks.
	const s = 4
	dirs := withSlot(a.Dirs, 0, spare)
	files := make([]*os.File, l.Parity)
	old := make([][]byte, l.Parity)
	for p := range l.Parity {
		f, err := os.OpenFile(filepath.Join(dirs[l.Slot(s, l.Data+p)], blockdev.DataFile), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[p], old[p] = f, make([]byte, c.Chunk)
		if _, err := f.ReadAt(old[p], s*c.Chunk); err != nil {
			t.Fatal(err)
		}
	}
	p := m[s*stripe : (s+1)*stripe]
	raidtest.Fill(seeded(t), p)
	if _, err := a.Vol.WriteAt(p, s*stripe); err != nil {
		t.Fatal(err)
	}
	for p, f := range files {
		if _, err := f.WriteAt(old[p], s*c.Chunk); err != nil { // the parity never landed
			t.Fatal(err)
		}
	}
	a.Vol.Crash()
	a.Vol = nil
	a.Open(t, dirs...)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	rebuildAll(t, a.Vol)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	a.Close(t)
	raidtest.CheckOnDisk(t, c, dirs, m)
	raidtest.CheckConsistent(t, c, dirs)
}
